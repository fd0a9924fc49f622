"""A queue's webhooks, as its spec declares them (``webhooks:`` in the queues file), and their secrets.

Declared per queue: named ``endpoints`` (a URL, the events it wants, a secret) and ``callbacks`` (whether
jobs may carry their own callback URL, given at enqueue, which events those get, and the secret that signs
them). The secret itself never enters the queues file, the chart's ConfigMap or a log line: the spec names an
environment variable (``secret_env``) or a file (``secret_file``, e.g. a mounted Kubernetes Secret) that
holds it, and only the deliverer reads it (``load_secret``).

Secrets are Standard Webhooks secrets: ``whsec_`` followed by base64 of 24 to 64 random bytes
(``openssl rand -base64 32``, prefixed). Delivery: docs/webhooks.md.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

WebhookEvent = Literal[
    "waiting", "delayed", "active", "progress", "retrying", "completed", "failed", "dead", "cancelled", "requeued"
]
ENDPOINT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CALLBACK_ENDPOINT = "callback"  # the endpoint name of per-job callback deliveries (in webhook-id)
MAX_URL_CHARS = 2048
SECRET_PREFIX = "whsec_"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _final_events() -> list[WebhookEvent]:
    return ["completed", "dead", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookUrlError(ValueError):
    pass


def check_url(url: str) -> str:
    """An absolute http(s) URL without credentials; the address it names is checked at delivery (SSRF)."""
    if len(url) > MAX_URL_CHARS:
        raise WebhookUrlError(f"longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise WebhookUrlError("holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed lazily; reading it is the check
    except ValueError as exc:
        raise WebhookUrlError(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlError("must start with https:// or http://")
    if not parts.hostname:
        raise WebhookUrlError("names no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError("must not carry a user name or password (sign with the secret instead)")
    return url


class SecretRef(_Model):
    """Where the signing secret is: exactly one of an environment variable or a file."""

    secret_env: str | None = Field(default=None, pattern=_ENV_NAME, description="env var holding the whsec_ secret")
    secret_file: str | None = Field(default=None, description="file holding the whsec_ secret (a mounted Secret)")

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give the signing secret's place: exactly one of secret_env or secret_file")
        return self

    @property
    def where(self) -> str:
        return f"env {self.secret_env}" if self.secret_env else f"file {self.secret_file}"


class WebhookEndpoint(SecretRef):
    """One receiver of a queue's events."""

    url: str = Field(description="https:// (or http://) URL the events are POSTed to")
    events: list[WebhookEvent] = Field(default_factory=_final_events, min_length=1, description="events sent")

    @model_validator(mode="after")
    def _url(self) -> WebhookEndpoint:
        try:
            check_url(self.url)
        except WebhookUrlError as exc:
            raise ValueError(f"url: {exc}") from None
        return self


class Callbacks(SecretRef):
    """Per-job callback URLs (``callback_url`` at enqueue): allowed on the queue, the events they get."""

    events: list[WebhookEvent] = Field(default_factory=_final_events, min_length=1, description="events sent")


class WebhookRetry(_Model):
    """Delivery attempts: ``initial_delay * 2**(n-1)`` (capped, with jitter) between them, then the dead store."""

    max_attempts: int = Field(default=12, ge=1, le=100, description="attempts before the dead store")
    initial_delay: float = Field(default=5.0, gt=0, description="seconds before the second attempt")
    max_delay: float = Field(default=3600.0, gt=0, description="longest wait between attempts, seconds")
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="one attempt's time limit")


class Webhooks(_Model):
    """A queue's webhooks (docs/webhooks.md)."""

    endpoints: dict[Annotated[str, Field(pattern=ENDPOINT_NAME_RE.pattern)], WebhookEndpoint] = Field(
        default_factory=dict, description="receivers of this queue's events, keyed by a stable name"
    )
    callbacks: Callbacks | None = Field(default=None, description="allow per-job callback URLs given at enqueue")
    retry: WebhookRetry = Field(default_factory=WebhookRetry)

    @model_validator(mode="after")
    def _names(self) -> Webhooks:
        if CALLBACK_ENDPOINT in self.endpoints:
            raise ValueError(f"endpoints: the name {CALLBACK_ENDPOINT!r} is kept for per-job callbacks")
        return self

    @property
    def active(self) -> bool:
        return bool(self.endpoints) or self.callbacks is not None


class SecretError(RuntimeError):
    """A signing secret that is missing or malformed; the message names its place, never its value."""


def load_secret(ref: SecretRef) -> bytes:
    """The key bytes of the Standard Webhooks secret ``ref`` points to (``whsec_`` prefix optional)."""
    if ref.secret_env is not None:
        raw = os.environ.get(ref.secret_env)
        if not raw:
            raise SecretError(f"webhook secret: environment variable {ref.secret_env} is not set")
    else:
        try:
            raw = Path(str(ref.secret_file)).read_text()
        except OSError as exc:
            raise SecretError(f"webhook secret: cannot read {ref.secret_file}: {exc.strerror}") from None
    text = raw.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"webhook secret in {ref.where}: not base64 after the {SECRET_PREFIX} prefix") from None
    if len(key) < 24:
        raise SecretError(f"webhook secret in {ref.where}: {len(key)} bytes; use at least 24 random bytes")
    return key
