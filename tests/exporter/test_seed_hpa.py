"""The seed guides' HPA, unchanged, against our External Metrics API.

The seeds scale one ``job-worker`` Deployment (which consumes every queue) with an External metric
``bullmq_queue_waiting``, no selector, ``averageValue: 100``. The HPA controller turns a missing
selector into an empty label selector and asks the metrics API for the metric with no
``labelSelector`` parameter (the MetricIdentifier's own documentation: "When unset, just the
metricName will be used"). What that means here, decided and documented in docs/kubernetes.md: every
queue this exporter counts (in the namespaces it serves), one item each. The HPA adds the items up
and divides by the per-pod target, so the seeds' HPA scales on the total waiting over all queues,
as a Prometheus-backed adapter summing the series of that name did for them.

The jobs are made by the real BullMQ (PyPI port, in a helper process so its connections close there).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import textwrap
from typing import Any

import kubernetes_validate
import pytest
import yaml
from redis.asyncio import Redis

from arqscale.core.producer import Producer
from arqscale.core.spec import parse_queues
from arqscale.exporter.external_metrics import BASE
from arqscale.exporter.quantities import parse_quantity
from exporter_support import get, running_exporter

# The seeds' manifest, field for field.
SEED_HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: job-worker
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: job-worker
  minReplicas: 2
  maxReplicas: 20
  metrics:
    - type: External
      external:
        metric:
          name: bullmq_queue_waiting
        target:
          type: AverageValue
          averageValue: '100'
"""

SPECS = parse_queues(
    {
        "queues": {
            "kyc-verification": {"backend": "bullmq"},
            "image-processing": {"backend": "bullmq"},
            "email": {"backend": "bullmq"},
            "reports": {"functions": ["arqscale.demo.tasks.send_email"]},
        }
    }
)
WAITING = {"kyc-verification": 180, "image-processing": 45, "email": 0, "reports": 30}

ADD_JOBS = textwrap.dedent(
    """
    import asyncio, json, sys
    from bullmq import Queue

    async def main(url, counts):
        for name, n in counts.items():
            queue = Queue(name, {"connection": url})
            if n:
                await queue.addBulk([{"name": "job", "data": {"i": i}} for i in range(n)])
            await queue.close()

    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
    """
)

# The HPA controller's tolerance (--horizontal-pod-autoscaler-tolerance, default 0.1).
TOLERANCE = 0.1


def hpa_desired_replicas(hpa: dict[str, Any], items: list[dict[str, Any]], current: int) -> int:
    """The HPA controller's arithmetic for an External metric with an AverageValue target.

    As in kube-controller-manager's replica calculator (GetExternalPerPodMetricReplicas): the values of
    all items are summed; within the tolerance the replica count stays; else ceil(sum / target),
    clamped to min/max replicas.
    """
    target = float(parse_quantity(hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"]))
    usage = sum(float(parse_quantity(item["value"])) for item in items)
    ratio = usage / (target * current)
    desired = current if abs(1.0 - ratio) <= TOLERANCE else math.ceil(usage / target)
    return max(hpa["spec"]["minReplicas"], min(hpa["spec"]["maxReplicas"], desired))


def metric_request(hpa: dict[str, Any], namespace: str) -> tuple[str, dict[str, str]]:
    """Path and query the HPA controller sends through the API server for the HPA's first metric."""
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]
    path = f"{BASE}/namespaces/{namespace}/{metric['name']}"
    selector = metric.get("selector")
    if not selector:
        # labels.Nothing().String() is "", and client-go leaves an empty labelSelector out of the query.
        return path, {}
    return path, {"labelSelector": ",".join(f"{k}={v}" for k, v in selector["matchLabels"].items())}


@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])
def test_the_seed_hpa_is_a_valid_autoscaling_v2_object(version: str) -> None:
    kubernetes_validate.validate(yaml.safe_load(SEED_HPA), version, strict=True)


async def test_seed_hpa_scales_on_the_total_waiting_over_every_queue(redis: Redis, redis_url: str) -> None:
    bullmq = {name: n for name, n in WAITING.items() if SPECS[name].backend == "bullmq"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", ADD_JOBS, redis_url, json.dumps(bullmq))
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    producer = Producer(redis, SPECS)
    for i in range(WAITING["reports"]):
        await producer.enqueue("reports", "send_email", i)
    hpa = yaml.safe_load(SEED_HPA)
    async with running_exporter(redis_url, SPECS, namespaces=frozenset({"jobs"})) as exp:
        root = f"https://127.0.0.1:{exp.api_port}"
        path, params = metric_request(hpa, "jobs")
        assert params == {}
        status, body = await get(root + path, params=params, ssl=False)
        assert status == 200, body
        answer = json.loads(body)
        assert answer["kind"] == "ExternalMetricValueList"
        values = {i["metricLabels"]["queue"]: parse_quantity(i["value"]) for i in answer["items"]}
        assert values == {name: float(n) for name, n in WAITING.items()}  # every queue, one item each
        # An explicitly empty labelSelector (what some clients send) means the same.
        status, same = await get(root + path, params={"labelSelector": ""}, ssl=False)
        assert status == 200 and json.loads(same)["items"] == answer["items"]
        # 255 waiting in all at 100 per pod: 3 replicas (from 2, outside the 10 % tolerance).
        assert hpa_desired_replicas(hpa, answer["items"], current=2) == 3
        # The same HPA narrowed to one queue, as the chart writes it: 180 -> 2 replicas.
        narrowed = yaml.safe_load(SEED_HPA)
        narrowed["spec"]["metrics"][0]["external"]["metric"]["selector"] = {
            "matchLabels": {"queue": "kyc-verification"}
        }
        path, params = metric_request(narrowed, "jobs")
        status, body = await get(root + path, params=params, ssl=False)
        assert status == 200, body
        items = json.loads(body)["items"]
        assert [i["metricLabels"]["queue"] for i in items] == ["kyc-verification"]
        assert hpa_desired_replicas(narrowed, items, current=3) == 2
        # A namespace this release does not serve gets no value: another team's seed HPA stays put.
        path, params = metric_request(hpa, "other-team")
        status, body = await get(root + path, params=params, ssl=False)
        assert status == 404 and json.loads(body)["kind"] == "Status"
