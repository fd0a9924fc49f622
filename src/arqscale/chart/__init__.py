"""The Helm chart's side of the queue model: ``values.schema.json`` generated from ``QueueSpec``.

Imports only ``arqscale.core``.
"""
