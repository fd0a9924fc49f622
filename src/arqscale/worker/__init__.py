"""The worker process (``arqscale worker``): one queue per process, on uvloop.

The loop, pickup and outcomes (the worker's half of the Redis protocol), probes, the event-loop
watchdog, pod deletion cost, worker metrics and process set-up. Imports only ``arqscale.core``.
"""
