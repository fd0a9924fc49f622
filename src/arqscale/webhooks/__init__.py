"""``arqscale webhooks``: delivers queue events to HTTP endpoints, signed as Standard Webhooks says.

``deliverer`` (reads the event streams through a consumer group, sends with retries), ``payload`` (an event
as a webhook body), ``signing``, ``addresses`` (which addresses may be called: server-side request forgery),
``sender`` (one HTTP attempt, pinned to the checked address), ``metrics`` and ``server`` (probes, /metrics,
signals). The Redis side, shared with the API and the CLI: ``arqscale.core.webhook_store``.
"""
