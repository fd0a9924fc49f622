"""Process-wide settings, read from the environment.

Redis is configured the way teams coming from BullMQ already do it (``REDIS_URL`` or
``REDIS_HOST``/``REDIS_PORT``/``REDIS_PASSWORD``/...); everything arqscale-specific lives under the
``ARQSCALE_`` prefix. Secrets are ``SecretStr`` so they never show up in a repr, a log line or a
validation error.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RedisSettings(BaseSettings):
    """Where Redis is and how to authenticate. ``REDIS_URL`` wins over the host/port fields.

    The topology is chosen by what is set (``topology``): one server (``REDIS_URL`` or
    ``REDIS_HOST``/``REDIS_PORT``), or a Sentinel-managed primary (``REDIS_SENTINELS`` and
    ``REDIS_SENTINEL_MASTER``), whose address every client asks the sentinels for on each new
    connection, so it follows a failover without a restart. The data-node fields (password, user,
    db, TLS) apply to the primary in both; the sentinels have their own password and user. Or a Redis
    Cluster (``REDIS_CLUSTER_NODES``, a few of its nodes: the client learns the rest and the slot map
    from them), where the password, user and TLS fields apply to every node and every queue's keys carry
    the queue's hash tag (``keys.QueueKeys``). The three are exclusive.
    """

    # hide_input_in_errors: a refused REDIS_URL is the secret itself; str(ValidationError) must not echo it.
    model_config = SettingsConfigDict(env_prefix="REDIS_", extra="ignore", hide_input_in_errors=True)

    url: SecretStr | None = Field(default=None, description="redis:// or rediss:// URL; may carry the password")
    host: str = "localhost"
    port: int = Field(default=6379, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    db: int = Field(default=0, ge=0)
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Only for self-signed test servers; never the default.
    tls_insecure: bool = False

    # Sentinel: comma-separated host:port of the sentinels; the primary's address comes from them.
    sentinels: str | None = Field(default=None, description="host:port,host:port of the Redis Sentinels")
    sentinel_master: str = Field(default="mymaster", min_length=1, description="the master name the sentinels watch")
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = None
    # TLS to the sentinels (they often listen in plain text beside TLS data nodes); the CA and client
    # certificate files are the data nodes' (REDIS_TLS_*).
    sentinel_tls: bool = False
    # How often a client asks the sentinels whether the primary moved, besides on every new connection:
    # bounds how long pooled connections keep writing to a demoted but living primary. 0: on connect only.
    sentinel_recheck_seconds: float = Field(default=1.0, ge=0)

    # Redis Cluster: comma-separated host:port of some of its nodes (the seed nodes).
    cluster_nodes: str | None = Field(default=None, description="host:port,host:port of Redis Cluster nodes")

    # Durable enqueue: after writing a job, WAIT until this many replicas have it (0: do not wait).
    wait_replicas: int = Field(default=0, ge=0)
    wait_timeout_ms: int = Field(default=1000, ge=1)

    @field_validator("url", mode="before")
    @classmethod
    def _empty_url_is_none(cls, value: object) -> object:
        # `REDIS_URL=` in a .env file means "not set", not "an empty URL".
        return None if value == "" else value

    @field_validator("url")
    @classmethod
    def _url_is_usable(cls, value: SecretStr | None) -> SecretStr | None:
        # Catch a malformed URL at start-up, with a message that never repeats the URL (it holds the password).
        if value is None:
            return value
        url = value.get_secret_value()
        parts = urlsplit(url)
        if "@" in url[len(parts.scheme) + 3 + len(parts.netloc) :]:
            # An '@' after the host part: a password with an unencoded '@' followed by '/', '?' or '#' ends the
            # host part early, and the rest of the password would be read as a path or fragment (and logged).
            raise ValueError(
                "REDIS_URL cannot be read unambiguously: percent-encode the user name and password "
                "(urllib.parse.quote(password, safe='')), e.g. '@' as %40, '/' as %2F, '#' as %23"
            )
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                f"REDIS_URL must start with redis://, rediss:// or unix://, not {parts.scheme or '(none)'}://"
            )
        try:
            parts.port  # noqa: B018 - urlsplit parses the port lazily; reading it is the check
        except ValueError:
            raise ValueError("REDIS_URL has a port that is not a number from 1 to 65535") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("REDIS_URL names no host")
        return value

    @field_validator("password", "sentinel_password", "sentinels", "cluster_nodes", mode="before")
    @classmethod
    def _empty_password_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("sentinels")
    @classmethod
    def _sentinels_are_addresses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_addresses(value)
        return value

    @field_validator("cluster_nodes")
    @classmethod
    def _cluster_nodes_are_addresses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_addresses(value, setting="REDIS_CLUSTER_NODES", default_port=6379)
        return value

    @model_validator(mode="after")
    def _one_topology(self) -> RedisSettings:
        if self.cluster_nodes is not None:
            return self._cluster_alone()
        if self.sentinels is None:
            return self
        if self.url is not None:
            raise ValueError(
                "REDIS_URL and REDIS_SENTINELS are both set: the sentinels name the primary, so unset REDIS_URL "
                "(its password, user and db go in REDIS_PASSWORD, REDIS_USERNAME and REDIS_DB)"
            )
        named = {"host", "port"} & self.model_fields_set
        if named:
            fields = " and ".join(f"REDIS_{n.upper()}" for n in sorted(named))
            raise ValueError(
                f"{fields} and REDIS_SENTINELS are both set: the sentinels name the primary, so unset {fields}"
            )
        return self

    def _cluster_alone(self) -> RedisSettings:
        others = [
            name
            for name, is_set in (
                ("REDIS_URL", self.url is not None),
                ("REDIS_SENTINELS", self.sentinels is not None),
                ("REDIS_HOST", "host" in self.model_fields_set),
                ("REDIS_PORT", "port" in self.model_fields_set),
            )
            if is_set
        ]
        if others:
            raise ValueError(
                f"REDIS_CLUSTER_NODES and {' and '.join(others)} are both set: the cluster's nodes name every "
                f"server, so unset {' and '.join(others)} (a password and user go in REDIS_PASSWORD and REDIS_USERNAME)"
            )
        if self.db != 0:
            raise ValueError("REDIS_DB must be 0 with REDIS_CLUSTER_NODES: a Redis Cluster has database 0 only")
        if self.wait_replicas:
            raise ValueError(
                "REDIS_WAIT_REPLICAS is not supported with REDIS_CLUSTER_NODES: WAIT counts one connection's "
                "writes, and a cluster client spreads them over the shards' connections"
            )
        return self

    @property
    def topology(self) -> str:
        """``standalone`` (one server), ``sentinel`` (a primary found through the sentinels) or ``cluster``."""
        if self.cluster_nodes is not None:
            return "cluster"
        return "sentinel" if self.sentinels is not None else "standalone"

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return parse_addresses(self.sentinels) if self.sentinels is not None else []

    def cluster_addresses(self) -> list[tuple[str, int]]:
        if self.cluster_nodes is None:
            return []
        return parse_addresses(self.cluster_nodes, setting="REDIS_CLUSTER_NODES", default_port=6379)

    def secrets(self) -> list[str]:
        """Every secret these settings hold (passwords, a URL with its password): what output must never show."""
        values = [s.get_secret_value() for s in (self.url, self.password, self.sentinel_password) if s is not None]
        if self.topology != "sentinel":
            values.append(self.connection_url())
        return [v for v in values if v]

    @property
    def uses_tls(self) -> bool:
        if self.url is not None:
            return urlsplit(self.url.get_secret_value()).scheme == "rediss"
        return self.tls

    def connection_url(self) -> str:
        """The full URL, secret included: hand it to a client, never to a logger.

        With sentinels, the URL of the primary as configured before any lookup (host left as the master
        name): only its scheme, user, password and db are used (``arqscale.core.connection``)."""
        if self.url is not None:
            return self.url.get_secret_value()
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.password is not None:
            user = quote(self.username or "", safe="")
            auth = f"{user}:{quote(self.password.get_secret_value(), safe='')}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        if self.sentinels is not None:
            return f"{scheme}://{auth}{quote(self.sentinel_master, safe='')}/{self.db}"
        if self.cluster_nodes is not None:
            host, port = self.cluster_addresses()[0]
            return f"{scheme}://{auth}{_host_part(host)}:{port}/0"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"

    def display_url(self) -> str:
        """The URL with any password replaced by ``***``: safe for logs and errors.

        With sentinels: ``redis+sentinel://[user:***@]h1:p1,h2:p2/<master>/<db>``, naming where the
        primary is looked up (only shown, never parsed: the settings are the separate fields). With a
        cluster: ``redis+cluster://[user:***@]h1:p1,h2:p2``, the seed nodes."""
        if self.sentinels is None and self.cluster_nodes is None:
            return redact_url(self.connection_url())
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:***@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        if self.cluster_nodes is not None:
            hosts = ",".join(f"{_host_part(h)}:{p}" for h, p in self.cluster_addresses())
            return f"{'rediss' if self.tls else 'redis'}+cluster://{auth}{hosts}"
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses())
        return f"{scheme}://{auth}{hosts}/{quote(self.sentinel_master, safe='')}/{self.db}"


def parse_addresses(text: str, setting: str = "REDIS_SENTINELS", default_port: int = 26379) -> list[tuple[str, int]]:
    """``host:port,host:port`` (IPv6 as ``[::1]:26379``); a port defaults to ``default_port`` (the
    sentinel port, 26379, or Redis' own, 6379, for cluster nodes). Errors name ``setting``."""
    addresses = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, port_text = item, str(default_port)
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{setting}: {item!r} is not host:port")
                port_text = rest[1:]
        elif ":" in item:
            host, _, port_text = item.rpartition(":")
        if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{setting}: {item!r} is not host:port with a port from 1 to 65535")
        addresses.append((host, int(port_text)))
    if not addresses:
        what = "node" if setting == "REDIS_CLUSTER_NODES" else "sentinel"
        raise ValueError(f"{setting} names no {what}: give host:port,host:port")
    return addresses


def _host_part(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def redact_url(url: str) -> str:
    """Replace the password of a URL by ``***`` (``redis://user:***@host:6379/0``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # a malformed port must not turn the redaction itself into an error
        return re.sub(r"(//[^/@:]*:)[^@]*@", r"\1***@", url)
    if port is not None:
        host = f"{host}:{port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


class QueuesFileSettings(BaseSettings):
    """``ARQSCALE_QUEUES_FILE`` alone: what ``load_queues()`` reads in a producer's process, where an
    unrelated bad ``ARQSCALE_*`` setting (a port, a token) must not stop it from finding its queues."""

    model_config = SettingsConfigDict(env_prefix="ARQSCALE_", extra="ignore")

    queues_file: Path | None = Field(default=None, description="YAML file with a `queues:` map; demo queues if unset")


class ArqscaleSettings(QueuesFileSettings):
    """arqscale's own knobs: ports, files, tokens. All read from ``ARQSCALE_*``."""

    log_level: str = "INFO"
    log_format: str = Field(default="text", pattern="^(text|json)$")

    # HTTP API
    api_host: str = "0.0.0.0"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_token: SecretStr | None = None
    # A second token that may only read: every mutating route answers 403 to it (the dashboard hides actions).
    api_read_token: SecretStr | None = None
    api_max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # Worker probes and metrics
    worker_host: str = "0.0.0.0"
    worker_port: int = Field(default=8080, ge=1, le=65535)
    # Liveness fails when Redis has been unreachable for longer than this.
    redis_unreachable_seconds: float = Field(default=60.0, gt=0)

    # Exporter: plain HTTP for /metrics and the KEDA endpoint, HTTPS for the External Metrics API.
    exporter_host: str = "0.0.0.0"
    exporter_port: int = Field(default=9100, ge=1, le=65535)
    exporter_refresh_seconds: float = Field(default=1.0, gt=0)
    metrics_api_port: int = Field(default=6443, ge=1, le=65535)
    metrics_api_enabled: bool = True
    metrics_api_cert_file: Path | None = None
    metrics_api_key_file: Path | None = None
    metrics_api_client_ca_file: Path | None = None
    metrics_api_allowed_names: str = Field(default="", description="comma-separated front-proxy CNs; empty = any")
    metrics_api_namespaces: str = Field(default="", description="comma-separated namespaces served; empty = all")
    metrics_api_tls_reload_seconds: float = Field(default=10.0, ge=0, description="0: never re-read the TLS files")

    # Webhook deliverer (`arqscale webhooks`): probes and metrics, and what it may call.
    webhooks_host: str = "0.0.0.0"
    webhooks_port: int = Field(default=8090, ge=1, le=65535)
    webhooks_allow_networks: str = Field(
        default="", description="comma-separated CIDRs webhooks may reach although not public (e.g. 10.0.0.0/8)"
    )
    webhooks_concurrency: int = Field(default=50, ge=1, le=10_000, description="delivery attempts at once")
    webhooks_consumer: str = Field(default="", description="consumer name in the group; default POD_NAME or host")
    webhooks_claim_idle_seconds: float = Field(default=60.0, gt=0, description="claim a dead deliverer's reads after")
    webhooks_drain_seconds: float = Field(default=10.0, ge=0, description="SIGTERM grace for attempts under way")

    @field_validator("webhooks_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        for part in value.split(","):
            if part.strip():
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"not a network (CIDR such as 10.0.0.0/8 or ::1/128): {part.strip()!r}") from None
        return value

    @field_validator("api_token", "api_read_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value
