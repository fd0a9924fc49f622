"""No part of a Redis password leaks, whatever shape the REDIS_URL has (issue 10, point 8).

Passwords are generated from canary segments joined by the characters that end or split a URL's host
part when left unencoded ('@', '#', '/', '?', ':', '%'). Either the URL is refused with a message that
says to percent-encode it, or it parses to exactly that password; in both cases no segment shows up in
any error, repr or display form. The processes' own output is checked on the issue's example.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from arqscale.core.settings import RedisSettings
from chaos_tasks import clean_env

# None starts with a hex digit, so "%" before one never forms a valid escape by accident.
SEGMENTS = ["Zq7xLeak", "Kp9wLeak", "Ym3vLeak", "Rt5sLeak"]
PASSWORDS = st.builds(
    lambda parts, seps: "".join(p + s for p, s in zip(parts, seps, strict=False)) + parts[-1],
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4),
    st.lists(st.sampled_from(["@", "#", "/", "?", ":", "%", "@#", "@/", "#@", "/@"]), min_size=0, max_size=3),
)


def leaks(text: str) -> list[str]:
    return [s for s in SEGMENTS if s in text]


@settings(max_examples=300, deadline=None)
@given(password=PASSWORDS, user=st.sampled_from(["", "app"]), tail=st.sampled_from(["", "/0", "/3?x=1"]))
def test_any_password_shape_is_refused_or_read_whole_and_never_shown(password: str, user: str, tail: str) -> None:
    url = f"redis://{user}:{password}@redis.example:6379{tail}"
    try:
        redis = RedisSettings(url=url)
    except ValidationError as exc:
        message = str(exc)
        assert "percent-encode" in message or "REDIS_URL" in message, message
        # (exc.errors() holds the input by design; arqscale formats errors with include_input=False.)
        assert not leaks(message) and not leaks(repr(exc.errors(include_input=False))), message
        return
    # Accepted: the client reads the whole password, and nothing we print holds any of it.
    assert unquote(urlsplit(redis.connection_url()).password or "") == password
    assert urlsplit(redis.connection_url()).hostname == "redis.example"
    assert not leaks(redis.display_url()) and not leaks(repr(redis)) and not leaks(str(redis))


@pytest.mark.parametrize(
    "url", ["redis://:Zq7xLeak@Kp9w#Leak@localhost:6379/0", "redis://:Zq7xLeak@Kp9w/Leak@localhost"]
)
def test_the_processes_refuse_an_ambiguous_url_without_echoing_it(url: str, tmp_path: Path) -> None:
    env = clean_env() | {"REDIS_URL": url, "ARQSCALE_LOG_LEVEL": "DEBUG"}
    for command in (["status"], ["worker", "--queue", "email"]):
        done = subprocess.run(
            [sys.executable, "-m", "arqscale", *command], env=env, capture_output=True, text=True, timeout=60
        )
        out = done.stdout + done.stderr
        assert done.returncode != 0 and "percent-encode" in out, out
        assert "Zq7x" not in out and "Kp9w" not in out and "Leak@" not in out, out
