"""Redis clients built from ``RedisSettings``: password, ACL user and TLS handled in one place."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from arqscale.core.settings import RedisSettings


def client_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """Extra keyword arguments for ``Redis.from_url`` (TLS files, timeouts).

    Every client has a socket timeout as well as a connect timeout: a Redis that is frozen or cut off by a
    partition accepts the connection (or already has it) and then never answers, and without one a call
    waits for as long as the freeze lasts. Processes that must answer faster pass a shorter one (the API).
    """
    kwargs: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 5, "health_check_interval": 30}
    if settings.uses_tls:
        # redis-py's asyncio client takes the names, not ``ssl.VerifyMode``: given ``ssl.CERT_REQUIRED`` it
        # silently leaves its context half-built and every TLS connection fails (tests/system/test_redis_tls.py).
        kwargs["ssl_cert_reqs"] = "none" if settings.tls_insecure else "required"
        kwargs["ssl_check_hostname"] = not settings.tls_insecure
        if settings.tls_ca_file is not None:
            kwargs["ssl_ca_certs"] = str(settings.tls_ca_file)
        if settings.tls_cert_file is not None:
            kwargs["ssl_certfile"] = str(settings.tls_cert_file)
        if settings.tls_key_file is not None:
            kwargs["ssl_keyfile"] = str(settings.tls_key_file)
    return kwargs


def create_redis(settings: RedisSettings, **overrides: Any) -> Redis:
    """An asyncio Redis client. Errors it raises name ``settings.display_url()``, never the password."""
    kwargs = client_kwargs(settings)
    kwargs.update(overrides)
    client: Redis = Redis.from_url(settings.connection_url(), **kwargs)
    return client
