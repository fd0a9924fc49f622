"""``arqscale webhooks``: run the webhook deliverer; ``arqscale webhooks dead ...``: its dead store.

- ``arqscale webhooks [--port N]``: deliver the events of every queue with ``webhooks:`` (docs/webhooks.md).
- ``arqscale webhooks dead list QUEUE``: deliveries whose attempts ran out (or whose address was refused).
- ``arqscale webhooks dead retry QUEUE (ID ... | --all)``: send them again, attempts counted from 0.
- ``arqscale webhooks dead purge QUEUE (ID ... | --all)``: delete them.
"""

from __future__ import annotations

import argparse
import datetime as dt

from redis.asyncio import Redis

from arqscale.cli._common import UsageError, arq_spec, run_with_redis
from arqscale.core.config import Config
from arqscale.core.safe_data import model_json
from arqscale.core.webhook_store import MAX_PAGE, WebhookStore

HELP = "deliver job events as signed webhooks (the deliverer process), or list, retry and purge undeliverable ones"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="HTTP port for /livez, /readyz, /metrics (ARQSCALE_WEBHOOKS_PORT)")
    sub = parser.add_subparsers(dest="store", metavar="dead")
    dead = sub.add_parser("dead", help="the dead store of undeliverable webhooks")
    actions = dead.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list undeliverable webhooks, newest first")
    listing.add_argument("queue", metavar="QUEUE")
    listing.add_argument("--limit", type=int, default=50, help=f"entries to show (1-{MAX_PAGE})")
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--json", action="store_true", help="print JSON")
    for name, what in (("retry", "send again (attempts from 0)"), ("purge", "delete")):
        action = actions.add_parser(name, help=f"{what} undeliverable webhooks")
        action.add_argument("queue", metavar="QUEUE")
        action.add_argument("ids", metavar="ID", nargs="*", help="webhook ids (webhook-id), as listed")
        action.add_argument("--all", action="store_true", help="every entry of the queue")


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") + " UTC"


async def _dead(args: argparse.Namespace, config: Config, redis: Redis) -> int:
    store = WebhookStore(redis, arq_spec(config, args.queue))
    if args.action == "list":
        page = await store.dead_page(max(args.offset, 0), min(max(args.limit, 1), MAX_PAGE))
        if args.json:
            print(model_json(page))
            return 0
        print(f"{page.total} undeliverable webhook(s) on {page.queue}")
        for item in page.items:
            print(f"{item.id}  {item.event}  job {item.job_id!r}  -> {item.endpoint}  {item.attempts} attempt(s)")
            print(f"    failed {_when(item.failed_at)}: {item.last_error}")
        return 0
    if bool(args.ids) == bool(args.all):
        raise UsageError(f"{args.action}: give webhook ids or --all (not both)")
    ids = None if args.all else list(args.ids)
    if args.action == "retry":
        retried = await store.retry_dead(ids)
        print(f"{len(retried.retried)} webhook(s) on {retried.queue} will be sent again")
        for missing in retried.missing:
            print(f"not in the dead store: {missing}")
        return 0 if not retried.missing else 1
    purged = await store.purge_dead(ids)
    print(f"{purged.deleted} undeliverable webhook(s) deleted from {purged.queue}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.store == "dead":
        return run_with_redis("webhooks", lambda config, redis: _dead(args, config, redis))
    from arqscale.core.config import load_config_or_exit
    from arqscale.core.webhook_spec import SecretError
    from arqscale.webhooks.server import serve

    config = load_config_or_exit()
    try:
        import uvloop

        uvloop.run(serve(config, port=args.port))
    except SecretError as exc:
        print(f"arqscale webhooks: {exc}", flush=True)
        return 2
    except OSError as exc:
        print(f"arqscale webhooks: cannot serve: {exc}")
        return 1
    return 0
