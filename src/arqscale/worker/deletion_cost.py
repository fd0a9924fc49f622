"""Keep the worker pod's ``controller.kubernetes.io/pod-deletion-cost`` annotation current.

When the HPA scales a Deployment down, the ReplicaSet deletes the pods with the lowest deletion cost
first. A busy worker marks itself expensive and an idle one cheap, so scale-down removes idle pods
and the drain only has to cover the rest. One merge-patch of the pod's own metadata per busy/idle
transition, at most one per ``min_interval`` (the API server is shared; a worker flapping between
busy and idle a hundred times a second must not become its load). Needs RBAC ``patch`` on ``pods``.

Outside a cluster (no ``POD_NAME``/``POD_NAMESPACE`` or no in-cluster credentials) it switches itself
off and the worker runs as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from kubernetes import client as k8s
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import SERVICE_CERT_FILENAME, SERVICE_TOKEN_FILENAME, InClusterConfigLoader

logger = logging.getLogger("arqscale.worker.deletion_cost")

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
BUSY_COST = 1000
# Below the default 0 of pods that never patched (just started, or patching failed): idle ones go first.
IDLE_COST = -1000
PATCH_CONTENT_TYPE = "application/merge-patch+json"


def patch_body(busy: bool) -> dict[str, Any]:
    return {"metadata": {"annotations": {ANNOTATION: str(BUSY_COST if busy else IDLE_COST)}}}


class DeletionCostPatcher:
    """Sends the desired busy/idle state on transitions, rate-limited; ``set_busy`` never blocks the loop."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        pod_name: str,
        namespace: str,
        *,
        min_interval: float = 30.0,
        hold_seconds: float = 15.0,
    ) -> None:
        self.api = k8s.CoreV1Api(api_client)
        self.api_client = api_client
        self.pod_name = pod_name
        self.namespace = namespace
        self.min_interval = min_interval
        self.hold_seconds = hold_seconds
        self.sent: bool | None = None  # nothing sent yet: the first call always patches
        self.patches = 0
        self._desired: bool | None = None
        self._changed_at = -float("inf")  # when _desired last changed
        self._last_sent_at = -float("inf")
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    def set_busy(self, busy: bool) -> None:
        if busy != self._desired:
            self._changed_at = time.monotonic()
        self._desired = busy
        if busy != self.sent and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._send_latest())

    async def _send_latest(self) -> None:
        while self._desired is not None and self._desired != self.sent:
            now = time.monotonic()
            wait = max(self._changed_at + self.hold_seconds, self._last_sent_at + self.min_interval) - now
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # the state may have flipped meanwhile: it must hold again, or nothing is sent
            desired = self._desired
            try:
                await asyncio.to_thread(self._patch, desired)
            except Exception as exc:
                # RBAC missing, API server away: the worker carries on; try again after the interval.
                if not self._warned:
                    logger.warning("cannot patch pod %s/%s %s: %s", self.namespace, self.pod_name, ANNOTATION, exc)
                    self._warned = True
                continue
            finally:
                # Counted from the end of a request: the API server never sees two closer than the interval.
                self._last_sent_at = time.monotonic()
            self.sent = desired
            self.patches += 1

    def _patch(self, busy: bool) -> None:
        self.api.patch_namespaced_pod(
            self.pod_name, self.namespace, patch_body(busy), _content_type=PATCH_CONTENT_TYPE, _request_timeout=5
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self.api_client.close)


def from_environment(
    *,
    environ: dict[str, str] | None = None,
    token_file: str = SERVICE_TOKEN_FILENAME,
    cert_file: str = SERVICE_CERT_FILENAME,
    min_interval: float = 30.0,
    hold_seconds: float = 15.0,
) -> DeletionCostPatcher | None:
    """A patcher for this pod with in-cluster credentials, or None (quietly) outside a cluster."""
    env = dict(os.environ if environ is None else environ)
    pod, namespace = env.get("POD_NAME"), env.get("POD_NAMESPACE")
    if not pod or not namespace:
        logger.debug("pod deletion cost off: POD_NAME/POD_NAMESPACE not set")
        return None
    config = k8s.Configuration()
    try:
        loader = InClusterConfigLoader(token_filename=token_file, cert_filename=cert_file, environ=env)  # type: ignore[no-untyped-call]
        loader.load_and_set(config)  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        logger.info("pod deletion cost off: no in-cluster Kubernetes config (%s)", exc)
        return None
    return DeletionCostPatcher(
        k8s.ApiClient(config), pod, namespace, min_interval=min_interval, hold_seconds=hold_seconds
    )
