"""The shared core: the queue model and the Redis protocol every arqscale process speaks.

Queue specs and settings, key names and scores, the Lua scripts, serializers, the producer, counts,
job status and listing, dead letters and queue control. Nothing here imports from the process
packages (``worker``, ``api``, ``exporter``, ``cli``, ``demo``, ``chart``); they all import from here.
"""
