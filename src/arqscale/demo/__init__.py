"""The local stack (``arqscale demo``) and the demo workloads it runs.

``stack`` starts Redis, the API, the exporter and one worker per queue on this machine and sends a
load you can watch drain; ``tasks`` are the demo workloads modelled on real ones (email,
data exports, image processing, document verification). Imports only ``arqscale.core`` (and starts
the other processes as subprocesses, never by import).
"""
