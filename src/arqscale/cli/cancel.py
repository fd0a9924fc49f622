"""``arqscale cancel JOB_ID``: a waiting or delayed job never runs; a running one is stopped by its worker."""

from __future__ import annotations

import argparse

from redis.asyncio import Redis

from arqscale.cli._common import ENCODED_HELP, arq_spec, job_id_argument, run_with_redis, shown_id
from arqscale.core.cancellation import CancelOutcome
from arqscale.core.config import Config
from arqscale.core.producer import Producer

HELP = "cancel a job: a waiting or delayed one never runs, a running one is stopped (never retried)"

_SAID = {
    CancelOutcome.CANCELLED: "job {id} cancelled: it will not run",
    CancelOutcome.CANCELLING: "job {id} is running: its worker stops it within a second (state: cancelled)",
    CancelOutcome.FINISHED: "job {id} already finished; nothing to cancel",
    CancelOutcome.NOT_FOUND: "no job {id} on any configured queue",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", help="the job's id")
    parser.add_argument("--encoded", action="store_true", help=ENCODED_HELP)
    parser.add_argument("--queue", metavar="QUEUE", help="its queue (default: found by looking the id up)")


async def _cancel(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    queue = arq_spec(config, args.queue).name if args.queue else None
    job_id = job_id_argument(args.job_id, args.encoded)
    outcome = await Producer(redis, config.queues).cancel(job_id, queue)
    print(_SAID[outcome].format(id=shown_id(job_id)))
    return 0 if outcome in (CancelOutcome.CANCELLED, CancelOutcome.CANCELLING) else 1


def run(args: argparse.Namespace) -> int:
    return run_with_redis("cancel", lambda config, redis: _cancel(args, config, redis))
