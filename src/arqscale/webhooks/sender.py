"""One delivery attempt: a signed POST to the endpoint, connected only to addresses that passed the check."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from arqscale import __version__
from arqscale.webhooks import signing
from arqscale.webhooks.addresses import AddressRefused, IPNetwork, PinnedResolver, check_literal

RESPONSE_READ_BYTES = 4096  # what is read of a receiver's answer (and dropped): the status is what counts


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    error: str | None = None
    refused: bool = False  # the address is not allowed: retrying cannot help


class Sender:
    """Holds one HTTP client session (connection pool) whose resolver checks and pins every address."""

    def __init__(self, allowed: Iterable[IPNetwork]) -> None:
        self.allowed = tuple(allowed)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No DNS cache (each new connection is resolved and checked again), no proxies from the environment
            # (a proxy would connect where we did not check), no cookies kept between receivers.
            connector = aiohttp.TCPConnector(resolver=PinnedResolver(self.allowed), use_dns_cache=False, limit=200)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def send(self, url: str, msg_id: str, key: bytes, body: bytes, limit_seconds: float) -> Attempt:
        host = urlsplit(url).hostname or ""
        try:
            check_literal(host, self.allowed)
        except AddressRefused as exc:
            return Attempt(False, str(exc), refused=True)
        headers = {
            "content-type": "application/json",
            "user-agent": f"arqscale-webhooks/{__version__}",
            **signing.headers(key, msg_id, int(time.time()), body),
        }
        try:
            async with self._client().post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,  # a redirect could point anywhere, checked or not: it counts as a failure
                timeout=aiohttp.ClientTimeout(total=limit_seconds),
            ) as response:
                await response.content.read(RESPONSE_READ_BYTES)
                if 200 <= response.status < 300:
                    return Attempt(True)
                return Attempt(False, f"HTTP {response.status} from {host}")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressRefused):
                return Attempt(False, str(exc.os_error), refused=True)
            return Attempt(False, f"cannot connect to {host}: {exc.os_error}")
        except TimeoutError:
            return Attempt(False, f"no answer from {host} within {limit_seconds:g}s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Attempt(False, f"{type(exc).__name__} from {host}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
