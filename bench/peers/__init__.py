"""The peers of bench/run.py: one small runner per task queue, each run by the bench-only virtualenv.

Each module is ``python -m peers.NAME worker|fill URL [options]`` (``bench/`` on ``PYTHONPATH``), started by
``bench/run.py`` with ``.bench-venv/bin/python`` (``python bench/run.py --setup-peers`` creates it from
``requirements.txt``). The peers are not dependencies of arqscale: none of them is importable in the project's
own virtualenv, so these modules import their library inside functions and only the standard library (and
redis-py, which every peer brings) at the top. ``common`` holds what they share: the arguments, the two tasks,
and the marks the harness reads.
"""
