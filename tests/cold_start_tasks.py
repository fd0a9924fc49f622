"""A task for tests/worker/test_cold_start_imports.py: it records the modules its worker process had imported
when it ran. Only the standard library's ``json`` and ``sys`` here: anything more would pollute that list."""

from __future__ import annotations

import json
import sys
from typing import Any


async def imported(ctx: dict[str, Any]) -> None:
    await ctx["redis"].set(f"imported:{ctx['job_id']}", json.dumps(sorted(sys.modules)))
