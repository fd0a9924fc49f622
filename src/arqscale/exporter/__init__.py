"""The exporter process (``arqscale exporter``): queue counts for Prometheus, the HPA and KEDA.

The snapshot loop, the Prometheus page, the External Metrics API with its label selectors and
quantities, the KEDA endpoint and the serving certificate. Imports only ``arqscale.core``.
"""
