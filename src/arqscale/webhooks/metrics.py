"""The deliverer's Prometheus metrics, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("delivered", "retried", "dead", "refused")


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.deliveries = Counter(
            "arqscale_webhooks_deliveries",
            "Delivery attempts by outcome (refused: the address is not allowed; such deliveries go to the dead store)",
            ["queue", "endpoint", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "arqscale_webhooks_attempt_duration_seconds",
            "Time of one delivery attempt",
            ["queue"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.events = Counter("arqscale_webhooks_events_read", "Event stream entries read", ["queue"], registry=r)
        self.pending = Gauge("arqscale_webhooks_pending", "Deliveries not yet made", ["queue"], registry=r)
        self.dead = Gauge("arqscale_webhooks_dead", "Deliveries in the dead store", ["queue"], registry=r)
        self.lag = Gauge(
            "arqscale_webhooks_stream_lag",
            "Event stream entries not yet read by the deliverers (Redis' consumer group lag; -1 when unknown)",
            ["queue"],
            registry=r,
        )
        self.gaps = Counter(
            "arqscale_webhooks_stream_gaps",
            "Times events were trimmed from the stream before the deliverers read them (events lost to webhooks)",
            ["queue"],
            registry=r,
        )
        self.lost = Counter(
            "arqscale_webhooks_events_lost",
            "Events trimmed from the stream before the deliverers read them (their webhooks were never made)",
            ["queue"],
            registry=r,
        )
        self.redis_up = Gauge("arqscale_webhooks_redis_up", "1 when the last Redis call succeeded", registry=r)
        self.in_flight = Gauge("arqscale_webhooks_in_flight", "Delivery attempts under way", registry=r)
