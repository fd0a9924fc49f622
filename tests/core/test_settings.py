"""Settings from the environment: the variables BullMQ teams already use, and no leaked secrets."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from arqscale.core.logs import setup_logging
from arqscale.core.settings import RedisSettings, redact_url


def test_host_port_password_build_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_PASSWORD": "s3cr:et", "REDIS_DB": "2"}.items():
        monkeypatch.setenv(k, v)
    settings = RedisSettings()
    assert settings.connection_url() == "redis://:s3cr%3Aet@cache:6380/2"
    assert settings.display_url() == "redis://:***@cache:6380/2"
    assert "s3cr" not in repr(settings)


def test_url_wins_and_tls_follows_the_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://app:hunter2@redis.example:6379/0")
    monkeypatch.setenv("REDIS_HOST", "ignored")
    settings = RedisSettings()
    assert settings.uses_tls
    assert settings.display_url() == "rediss://app:***@redis.example:6379/0"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


def test_acl_username_without_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_USERNAME", "worker")
    monkeypatch.setenv("REDIS_TLS", "true")
    assert RedisSettings().connection_url() == "rediss://worker@localhost:6379/0"


def test_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("REDIS_PASSWORD", "")
    settings = RedisSettings()
    assert settings.url is None and settings.password is None


def test_redact_leaves_passwordless_urls_alone() -> None:
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_log_filter_masks_url_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("INFO", "text")
    logging.getLogger("t").warning("cannot reach %s", "redis://:topsecret@db:6379/0")
    root.handlers[:], root.level = saved[0], saved[1]
    err = capsys.readouterr().err
    assert "topsecret" not in err and "redis://:***@db:6379/0" in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://:pw-SECRET@host:6379", "must start with redis://, rediss:// or unix://, not http://"),
        ("redis://:pw-SECRET@host:notaport/0", "has a port that is not a number"),
        ("redis://:pw-SECRET@:6379/0", "names no host"),
    ],
)
def test_malformed_url_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch, url: str, message: str) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ValidationError) as info:
        RedisSettings()
    text = str(info.value.errors(include_url=False, include_input=False))
    assert message in text and "pw-SECRET" not in text
