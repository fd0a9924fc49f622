"""The HTTP API process (``arqscale api``): routes, the OpenAPI document and the dashboard.

Imports only ``arqscale.core``.
"""
