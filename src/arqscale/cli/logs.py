"""``arqscale logs JOB_ID``: the lines a job's tasks wrote (``ctx["log"]`` and ``logging`` while they ran)."""

from __future__ import annotations

import argparse
import re

from redis.asyncio import Redis

from arqscale.cli._common import ENCODED_HELP, job_id_argument, run_with_redis, shown_id
from arqscale.core import job_logs
from arqscale.core.config import Config
from arqscale.core.job_status import JobStatusReader
from arqscale.core.models import JobState
from arqscale.core.safe_data import model_json

HELP = "print the log lines a job's tasks wrote, oldest first"

# A task's text is shown, never obeyed: terminal control sequences (ESC, BEL, CR, ...) are printed escaped.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", help="the job's id")
    parser.add_argument("--encoded", action="store_true", help=ENCODED_HELP)
    parser.add_argument("--json", action="store_true", help="print the page as JSON")
    parser.add_argument("--offset", type=int, default=0, help="lines to skip")
    parser.add_argument("--limit", type=int, default=job_logs.MAX_PAGE, help=f"lines to show (1-{job_logs.MAX_PAGE})")


def terminal_safe(text: str) -> str:
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


async def _logs(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    job_id = job_id_argument(args.job_id, args.encoded)
    limit = min(max(args.limit, 1), job_logs.MAX_PAGE)
    key = await job_logs.log_key(redis, config.queues, job_id)
    page = await job_logs.read(redis, job_id, max(args.offset, 0), limit, key=key)
    if page.total == 0 or key is None:
        status = await JobStatusReader(redis, config.queues).read(job_id)
        if status.state is JobState.NOT_FOUND:
            print(f"no job {shown_id(job_id)} on any configured queue")
            return 1
    if args.json:
        print(model_json(page))
        return 0
    if page.lines:
        print(terminal_safe(job_logs.as_text(page.lines)))
    elif page.total == 0:
        print(f"job {shown_id(job_id)} has no log lines")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_with_redis("logs", lambda config, redis: _logs(args, config, redis))
