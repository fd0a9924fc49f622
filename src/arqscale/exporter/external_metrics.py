"""The External Metrics API (``external.metrics.k8s.io/v1beta1``), served straight from the cache.

Registered with an APIService, this lets a plain HPA scale on queue counts with no Prometheus and no
prometheus-adapter. Metric names are the exporter's gauge names; each item has the label ``queue``.

Answers the HPA can act on:
- a known queue with nothing in it: one item of value ``"0"`` (an empty list is an error to the HPA);
- an unknown metric, or a selector naming no configured queue: a ``Status`` 404 listing what exists,
  so ``kubectl describe hpa`` shows the typo;
- a selector that does not parse: ``Status`` 400 with the parser's message;
- Redis down: ``Status`` 503, so the HPA keeps its replica count instead of scaling to the minimum;
- a namespace this exporter does not serve: ``Status`` 404 and no value. The APIService is
  cluster-wide, so without this an HPA in any namespace would read this release's counts for a queue
  of the same name (two releases, two ``email`` queues).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from arqscale.core.models import QueueCounts
from arqscale.exporter import label_selectors, wait_target
from arqscale.exporter.prom import QUEUE_GAUGES, queue_value
from arqscale.exporter.quantities import format_quantity
from arqscale.exporter.snapshot import RedisUnavailable, Snapshot, SnapshotCache
from arqscale.exporter.tls_certs import ClientCertPolicy

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
BASE = f"/apis/{GROUP_VERSION}"
LABEL = "queue"
METRICS: dict[str, str] = {name: field for name, (_, field) in QUEUE_GAUGES.items()} | {
    wait_target.METRIC: "wait_target"  # served for the queues that list wait_target in autoscaling.metrics
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_HEADERS = {"Content-Type": "application/json"}
# Answers kept per snapshot, keyed by metric and query string: an HPA asks the same few questions every 15 s,
# a scanner asking random selectors must not grow the cache without bound.
MAX_CACHED_ANSWERS = 1024


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")), status=status, content_type="application/json")


def status_response(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    """A Kubernetes ``Status`` object: what kubectl and the HPA controller print on failure."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return _json(body, code)


_GROUP_VERSION_FOR_DISCOVERY = {"groupVersion": GROUP_VERSION, "version": VERSION}
API_GROUP = {
    "name": GROUP,
    "versions": [_GROUP_VERSION_FOR_DISCOVERY],
    "preferredVersion": _GROUP_VERSION_FOR_DISCOVERY,
}


def resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {"name": name, "singularName": "", "namespaced": True, "kind": "ExternalMetricValueList", "verbs": ["get"]}
            for name in METRICS
        ],
    }


def name_list(names: Iterable[str], limit: int = 20) -> str:
    """Names for an error message, cut short so 1,000 queues do not fill kubectl's screen."""
    listed = list(names)
    more = f" and {len(listed) - limit} more" if len(listed) > limit else ""
    return ", ".join(listed[:limit]) + more


def rfc3339(unix_seconds: float) -> str:
    return dt.datetime.fromtimestamp(unix_seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ExternalMetricsAPI:
    """Handlers for the aggregated API, bound to one cache and one client-certificate policy."""

    def __init__(
        self,
        cache: SnapshotCache,
        policy: ClientCertPolicy | None = None,
        *,
        namespaces: frozenset[str] | None = None,
    ) -> None:
        self.cache = cache
        self.policy = policy or ClientCertPolicy(required=False)
        self.namespaces = namespaces  # None: every namespace
        self._resource_list = resource_list()
        self._position = {name: i for i, name in enumerate(cache.specs)}
        # The encoded 200 answers for the snapshot they were built from (answers follow the snapshot only).
        self._answers: dict[tuple[str, str], bytes] = {}
        self._answers_for: Snapshot | None = None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/apis", self._guard(self.api_group_list)),
            web.get(f"/apis/{GROUP}", self._guard(self.api_group)),
            web.get(BASE, self._guard(self.api_resources)),
            web.get(BASE + "/namespaces/{namespace}/{metric}", self._guard(self.metric_values)),
        ]

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            transport = request.transport
            peercert = transport.get_extra_info("peercert") if transport is not None else None
            refusal = self.policy.refusal(peercert)
            if refusal is not None:
                return status_response(401, "Unauthorized", refusal)
            return await handler(request)

        return guarded

    def known_queues(self) -> str:
        return name_list(self._position)

    def select(self, selector: label_selectors.Selector) -> list[str]:
        """Configured queues the selector matches, in configuration order."""
        named = selector.required_values(LABEL)
        if named is None:
            candidates: list[str] = list(self._position)
        else:
            # queue=x names its queues: look them up instead of testing all 1,000 configured ones.
            candidates = sorted((n for n in named if n in self._position), key=self._position.__getitem__)
        return [name for name in candidates if selector.matches({LABEL: name})]

    def _value(self, counts: QueueCounts, queue: str, field: str) -> float:
        if field == "wait_target":
            estimate = self.cache.wait_target.estimates.get(queue)
            return 0.0 if estimate is None else estimate.workers
        return queue_value(counts, field)

    async def api_group_list(self, request: web.Request) -> web.Response:
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": [API_GROUP]})

    async def api_group(self, request: web.Request) -> web.Response:
        return _json({"kind": "APIGroup", "apiVersion": "v1", **API_GROUP})

    async def api_resources(self, request: web.Request) -> web.Response:
        return _json(self._resource_list)

    async def metric_values(self, request: web.Request) -> web.Response:
        metric = request.match_info["metric"]
        namespace = request.match_info["namespace"]
        if self.namespaces is not None and namespace not in self.namespaces:
            return status_response(
                404,
                "NotFound",
                f"external metric {metric!r} is not served for namespace {namespace!r}: this arqscale "
                f"exporter serves the queues of namespace(s) {name_list(sorted(self.namespaces))} "
                "(ARQSCALE_METRICS_API_NAMESPACES, the chart's metricsApi.namespaces)",
                {"name": metric, "group": GROUP, "kind": metric},
            )
        snap = self.cache.fresh()
        key = (metric, request.query_string)
        if snap is not None and snap is self._answers_for:
            cached = self._answers.get(key)
            if cached is not None:  # the same question on the same snapshot: the same answer
                return web.Response(body=cached, headers=JSON_HEADERS)
        field = METRICS.get(metric)
        if field is None:
            return status_response(
                404,
                "NotFound",
                f"unknown external metric {metric!r}; this exporter serves {', '.join(METRICS)} "
                f"with label queue (known queues: {self.known_queues()})",
                {"name": metric, "group": GROUP, "kind": metric},
            )
        try:
            selector = label_selectors.parse(request.query.get("labelSelector", ""))
        except label_selectors.SelectorError as exc:
            return status_response(400, "BadRequest", str(exc))
        queues = self.select(selector)
        tracker = self.cache.wait_target
        if field == "wait_target" and queues and not any(tracker.tracks(q) for q in queues):
            return status_response(
                404,
                "NotFound",
                f"metric {metric!r} is computed only for queues whose autoscaling.metrics list wait_target; "
                f"{name_list(queues)} do not (queues with it: {name_list(tracker.specs) or 'none'})",
                {"name": metric, "group": GROUP, "kind": metric},
            )
        if field == "wait_target":
            queues = [q for q in queues if tracker.tracks(q)]
        if not queues:
            return status_response(
                404,
                "NotFound",
                f"label selector {request.query.get('labelSelector', '')!r} names no configured queue for "
                f"metric {metric!r}; known queues: {self.known_queues()} (select one with queue=<name>)",
                {"name": metric, "group": GROUP, "kind": metric},
            )
        try:
            snap = await self.cache.get()
        except RedisUnavailable as exc:
            return status_response(503, "ServiceUnavailable", f"queue counts are unavailable: {exc}")
        timestamp = rfc3339(snap.taken_at)
        items = [
            {
                "metricName": metric,
                "metricLabels": {LABEL: name},
                "timestamp": timestamp,
                "value": format_quantity(self._value(snap.counts[name], name, field)),
            }
            for name in queues
        ]
        answer = {"kind": "ExternalMetricValueList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}
        body = json.dumps(answer, separators=(",", ":")).encode()
        if snap is not self._answers_for:
            self._answers, self._answers_for = {}, snap
        if len(self._answers) < MAX_CACHED_ANSWERS:
            self._answers[key] = body
        return web.Response(body=body, headers=JSON_HEADERS)
