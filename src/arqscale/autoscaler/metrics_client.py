"""Reads External metrics the way the HPA controller does, from the exporter's HTTPS metrics API.

The controller's client (``k8s.io/metrics/pkg/client/external_metrics``, used by
``pkg/controller/podautoscaler/metrics/client.go`` ``externalMetricsClient.GetExternalMetric``) asks
``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/<ns>/<lowercased metric>?labelSelector=<selector>``
(the selector is ``metav1.LabelSelectorAsSelector(matchLabels).String()``: ``key=value`` joined by commas,
keys sorted), fails on an empty item list, and returns each item's ``Quantity.MilliValue()``; the
replica calculator adds them up. In a cluster the request goes through the kube-apiserver's
aggregation layer; here it goes to the exporter directly (its certificate is self-signed unless you
give it one, so pass its CA, or skip verification as an ``insecureSkipTLSVerify`` APIService does).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

from arqscale.autoscaler.hpa import ExternalMetric, HpaError, parse_quantity_milli

API_PATH = "/apis/external.metrics.k8s.io/v1beta1"


class MetricUnavailable(RuntimeError):
    """The metric could not be read (HTTP error, Status object, empty list): the controller's error."""


@dataclass(frozen=True, slots=True)
class MetricsApi:
    base_url: str  # https://127.0.0.1:6443
    namespace: str = "default"
    ca_file: Path | None = None
    insecure: bool = False
    timeout: float = 5.0

    def url(self, metric: ExternalMetric) -> str:
        path = f"{API_PATH}/namespaces/{quote(self.namespace, safe='')}/{quote(metric.name.lower(), safe='')}"
        selector = metric.label_selector()
        return self.base_url.rstrip("/") + path + (f"?labelSelector={quote(selector, safe='')}" if selector else "")

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class MetricsClient:
    def __init__(self, api: MetricsApi) -> None:
        self.api = api
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MetricsClient:
        connector = aiohttp.TCPConnector(ssl=self.api.ssl_context())
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.api.timeout)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def usage_milli(self, metric: ExternalMetric) -> int:
        """The sum of the items' milli-values, or MetricUnavailable with the reason."""
        assert self._session is not None, "use `async with MetricsClient(...)`"
        try:
            async with self._session.get(self.api.url(metric)) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise MetricUnavailable(f"{metric.name}: {type(exc).__name__}: {exc}") from exc
        if status != 200:
            message = body.get("message") if isinstance(body, dict) else None
            raise MetricUnavailable(f"{metric.name}: HTTP {status}: {message or body}")
        items = body.get("items") if isinstance(body, dict) else None
        if not items:
            raise MetricUnavailable(f"{metric.name}: no metrics returned from external metrics API")
        try:
            return sum(parse_quantity_milli(item["value"]) for item in items)
        except (KeyError, TypeError, HpaError) as exc:
            raise MetricUnavailable(f"{metric.name}: unreadable item: {exc}") from exc
