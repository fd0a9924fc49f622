"""``GET /keda/v1/queues/{queue}``: one queue's counts as JSON for KEDA's ``metrics-api`` scaler.

KEDA's ``metrics-api`` trigger fetches a URL and reads one number at ``valueLocation`` (a GJSON path),
so every count is a top-level number here (``backlog``, ``waiting``...). Unlike KEDA's Redis scaler,
which can only ``ZCARD`` an arq queue, these are exact: running and deferred jobs are not "waiting".
KEDA treats a non-200 answer as a failed fetch and keeps its last decision (or its ``fallback``), so
an unknown queue is a 404 that names the known ones and a Redis outage a 503. See docs/keda.md.
"""

from __future__ import annotations

from aiohttp import web

from arqscale.exporter.external_metrics import name_list, rfc3339
from arqscale.exporter.snapshot import RedisUnavailable, SnapshotCache
from arqscale.exporter.wait_target import KEDA_FIELD

ROUTE = "/keda/v1/queues/{queue}"


class KedaEndpoint:
    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache

    async def handle(self, request: web.Request) -> web.Response:
        queue = request.match_info["queue"]
        if queue not in self.cache.specs:
            known = name_list(self.cache.specs)
            return web.json_response({"error": f"unknown queue {queue!r}; known queues: {known}"}, status=404)
        try:
            snap = await self.cache.get()
        except RedisUnavailable as exc:
            return web.json_response({"error": f"queue counts are unavailable: {exc}"}, status=503)
        counts = snap.counts[queue]
        body = counts.as_dict()
        body["timestamp"] = rfc3339(snap.taken_at)
        body["backend"] = self.cache.specs[queue].backend
        estimate = self.cache.wait_target.estimates.get(queue)
        if estimate is not None:  # queues that list wait_target in autoscaling.metrics
            body[KEDA_FIELD] = estimate.workers
        raw = snap.raw_bullmq.get(queue)
        if raw is not None:
            # BullMQ's own getJobCounts numbers, for Node teams used to them (valueLocation: bullmq.waiting).
            body["bullmq"] = dict(raw.states)
        return web.json_response(body)
