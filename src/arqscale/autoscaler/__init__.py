"""``arqscale autoscale``: the Kubernetes HPA's algorithm over local ``arqscale worker`` processes.

For laptops, demos, benchmarks and tests; in a cluster the real HPA (or KEDA) does this. ``hpa`` is the
HorizontalPodAutoscaler as data (parsed from the chart's rendered YAML or built from a queue spec),
``algorithm`` the controller's arithmetic as pure functions, ``metrics_client`` reads our External
Metrics API the way the controller does, ``pool`` starts and drains worker processes and ``runner``
ties them together every sync period.
"""
