"""Signatures the Standard Webhooks reference library accepts, and the address checks as classes of input
(server-side request forgery)."""

from __future__ import annotations

import base64
import ipaddress
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from arqscale.core.webhook_spec import SecretError, SecretRef, load_secret
from arqscale.webhooks import signing
from arqscale.webhooks.addresses import (
    METADATA,
    AddressRefused,
    PinnedResolver,
    check_literal,
    parse_networks,
    refusal,
)

keys = st.binary(min_size=24, max_size=64)
ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(key=keys, msg_id=ids, value=json_values)
@settings(max_examples=200, deadline=None)
def test_reference_library_verifies_our_signature(key: bytes, msg_id: str, value: object) -> None:
    # The library parses the body as JSON after checking it; ours are JSON, in any encoding of any value.
    body = json.dumps(value, ensure_ascii=False).encode()
    now = int(time.time())
    headers = signing.headers(key, msg_id, now, body)
    secret = "whsec_" + base64.b64encode(key).decode()
    Webhook(secret).verify(body, headers)  # raises when it does not match
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(key[::-1] + b"x").decode()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_secrets_come_from_the_environment_or_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    key = b"k" * 32
    monkeypatch.setenv("HOOK_SECRET", "whsec_" + base64.b64encode(key).decode())
    assert load_secret(SecretRef(secret_env="HOOK_SECRET")) == key
    from pathlib import Path

    path = Path(str(tmp_path)) / "secret"
    path.write_text(base64.b64encode(key).decode() + "\n")  # the prefix is optional, a trailing newline is fine
    assert load_secret(SecretRef(secret_file=str(path))) == key
    monkeypatch.setenv("SHORT", "whsec_" + base64.b64encode(b"short").decode())
    for ref, said in (
        (SecretRef(secret_env="MISSING_SECRET"), "MISSING_SECRET is not set"),
        (SecretRef(secret_env="SHORT"), "5 bytes"),
        (SecretRef(secret_file=str(path) + ".none"), "cannot read"),
    ):
        with pytest.raises(SecretError, match=said) as err:
            load_secret(ref)
        assert base64.b64encode(b"short").decode() not in str(err.value)
    monkeypatch.setenv("NOT_B64", "whsec_not base64!")
    with pytest.raises(SecretError, match="not base64") as err:
        load_secret(SecretRef(secret_env="NOT_B64"))
    assert "not base64!" not in str(err.value).split(":")[-1]  # the value itself is never repeated
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef(secret_env="A", secret_file="/b")


# Address ranges webhooks must never reach unless allowed: (network, what).
REFUSED_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
REFUSED_V6 = ["::1/128", "::/128", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "2001:db8::/32", "100::/64"]


def _in(network: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    net = ipaddress.ip_network(network)
    return st.integers(0, net.num_addresses - 1).map(lambda n: net[n])


refused_addresses = st.one_of(*[_in(n) for n in REFUSED_V4 + REFUSED_V6])


@given(refused_addresses)
@settings(max_examples=500, deadline=None)
def test_non_public_addresses_are_refused(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert refusal(addr) is not None
    with pytest.raises(AddressRefused):
        check_literal(str(addr), ())
    # The same address carried in IPv6 forms is refused too.
    if isinstance(addr, ipaddress.IPv4Address):
        six_to_four = f"2002:{int(addr) >> 16:x}:{int(addr) & 0xFFFF:x}::1"
        for carried in (f"::ffff:{addr}", six_to_four, f"64:ff9b::{addr}"):
            assert refusal(ipaddress.ip_address(carried)) is not None, carried


@given(_in("8.8.0.0/16") | _in("1.1.1.0/24") | _in("2606:4700::/32") | _in("93.184.0.0/16"))
def test_public_addresses_are_allowed(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert refusal(addr) is None


@given(refused_addresses)
@settings(max_examples=200, deadline=None)
def test_an_operator_may_allow_a_network(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    allowed = parse_networks(f"{addr}/{addr.max_prefixlen}, 127.0.0.0/8")
    assert refusal(addr, allowed) is None


def test_cloud_metadata_addresses_are_refused() -> None:
    assert ipaddress.ip_address("169.254.169.254") in METADATA
    for addr in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "100.100.100.200"):
        assert "metadata" in (refusal(ipaddress.ip_address(addr)) or ""), addr
    with pytest.raises(AddressRefused, match="metadata"):
        check_literal("[fd00:ec2::254]", ())


async def test_names_are_resolved_checked_and_pinned() -> None:
    with pytest.raises(AddressRefused, match="loopback"):
        await PinnedResolver(()).resolve("localhost", 80, 0)  # type: ignore[arg-type]
    results = await PinnedResolver(parse_networks("127.0.0.0/8,::1/128")).resolve("localhost", 80, 0)  # type: ignore[arg-type]
    assert results and all(ipaddress.ip_address(r["host"]).is_loopback for r in results)
    assert all(r["hostname"] == "localhost" for r in results)


def test_queues_with_webhooks_keep_more_events_by_default() -> None:
    from arqscale.core.spec import WEBHOOK_EVENTS_MAX_LEN, parse_queues

    hooks = {"callbacks": {"secret_env": "S"}}
    specs = parse_queues(
        {
            "queues": {
                "plain": {"functions": ["m.f"]},
                "hooked": {"functions": ["m.f"], "webhooks": hooks},
                "chosen": {"functions": ["m.f"], "webhooks": hooks, "events": {"max_len": 5000}},
            }
        }
    )
    assert specs["plain"].events.max_len == 10_000
    assert specs["hooked"].events.max_len == WEBHOOK_EVENTS_MAX_LEN
    assert specs["chosen"].events.max_len == 5000
    with pytest.raises(ValueError, match=r"events\.enabled"):
        parse_queues({"queues": {"off": {"functions": ["m.f"], "webhooks": hooks, "events": {"enabled": False}}}})
