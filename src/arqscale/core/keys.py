"""Every Redis key arqscale touches, in one place.

arq's own keys stay exactly as arq writes them, so plain arq producers and arq's ``Job`` helpers keep
working: the queue sorted set (``arq:queue:<name>``, score = when the job may run), ``arq:job:<id>``
(the payload), ``arq:in-progress:<id>``, ``arq:retry:<id>`` and ``arq:result:<id>``.

arqscale adds, per queue, under ``arqscale:<queue>:``:

- ``active``: sorted set job id -> lease expiry (Redis ms), where earlier workers kept their running jobs'
  leases. Running jobs now stay in the queue's sorted set parked under their lease (``scores.LEASED``): the
  worker's heartbeat moves the parked score forward, and an expired one (a dead or stalled worker) is swept
  back to its place in line by the next pickup or heartbeat of any worker. This set is read and swept only
  while such leases remain (a rolling upgrade).
- ``paused``: present while the queue is paused.
- ``starts``: sorted set of recent job starts (the cross-process sliding-window rate limit).
- ``pick:<worker id>`` (and ``pick:<worker id>:1``, ``:2``): the token and job ids of a worker's last pickup in
  each of its lanes (round trips in flight at once, ``worker.pickup.LANES``), so a resent pickup (its reply was
  lost) returns the same jobs without counting a try again.
- ``wake``: pub/sub channel for wake-ups every worker should see (a resume, a cancel, a deferred job, jobs
  swept back); our enqueues of ready jobs use ``marker`` instead.
- ``marker``: a one-member sorted set our enqueues of ready jobs add to; each idle worker waits on it with
  ``BZPOPMIN``, so one worker wakes per enqueue, and a pickup that leaves ready jobs behind adds it again for
  the next (BullMQ's marker).
- ``<queue key>:arqscale-own`` (beside arq's queue key): written by our own scripts whenever they change the
  queue key without making a job ready (a pickup, an outcome that ends a job) or with a wake-up of their own
  (an enqueue), so the client-tracking invalidation of that change wakes no idle worker.
- ``dlq`` (hash id -> JSON entry) and ``dlq:index`` (sorted set id -> failed ms): the dead-letter store.
- ``completed``: sorted set id -> finished ms, the retention index behind the ``completed`` count.
- ``workers``: sorted set worker id -> heartbeat expiry (ms), for status pages.
- ``events``: stream of job events (``arqscale.core.events``), capped at the queue's ``events.max_len``.
- ``totals``: hash of counters (enqueued, started, completed, failed, retried, dead, cancelled, requeued,
  run_ms), incremented by the scripts that change a job's state.
- ``g:...``: per-key limits: ``g:running``, ``g:run``, ``g:held``, ``g:wait:<key>``, ``g:starts:<key>``,
  ``g:timers``, ``g:index`` (described in ``lua.LEASE_LUA``).

and per job ``arqscale:group:<id>`` (the key given at enqueue), ``arqscale:progress:<id>`` (JSON progress
reported by the task), ``arqscale:logs:<id>`` (the job's log lines, kept as long as its result) and
``arqscale:error:<id>`` (the last error while a retry is pending).

The in-progress key holds the job's ownership record, ``"<queue score> <try> <pickup token>"``: arq only
checks that it exists (``Job.status()`` says in progress), arqscale's scripts honour an outcome or a heartbeat
only from the token it names (docs/design.md, "Ownership"). The try being run is there, not in the try counter
``arq:retry:<id>``, which holds the tries before it until the lease ends (``lua.LEASE_LUA``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

if TYPE_CHECKING:
    from arqscale.core.spec import QueueSpec

PROGRESS_PREFIX = "arqscale:progress:"
ERROR_PREFIX = "arqscale:error:"
# A job's key for per-key limits when given at enqueue (``group=``); same TTL as its payload.
GROUP_PREFIX = "arqscale:group:"
# A job's log lines (list of JSON entries, see ``job_logs``); expires and is deleted with its result.
LOGS_PREFIX = "arqscale:logs:"
# A job's callback URL (given at enqueue, queues with webhooks.callbacks); same TTL as its payload.
CALLBACK_PREFIX = "arqscale:callback:"
# Beside the queue key (``arq:queue:<name>:arqscale-own``): under the prefix the workers track, so Redis reports
# it in the same invalidation as the queue key when one script writes both (see ``QueueKeys.own_change``).
OWN_CHANGE_SUFFIX = ":arqscale-own"


def job_key(job_id: str) -> str:
    return job_key_prefix + job_id


def in_progress_key(job_id: str) -> str:
    return in_progress_key_prefix + job_id


def _record_fields(record: bytes | str | None) -> list[str]:
    """An ownership record's fields: score, try, token (or score, token for one from before the try moved in);
    a single field for arq's own ("1"), none for no record."""
    if isinstance(record, bytes):
        record = record.decode(errors="replace")
    return record.split(" ", 2) if record else []


def running_try(record: bytes | str | None) -> int | None:
    """The try a running job's ownership record names, or None: no record, arq's own ("1"), or one written
    before the try moved into it ("<queue score> <token>")."""
    parts = _record_fields(record)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def record_score(record: bytes | str | None) -> float | None:
    """The queue score (the job's place in line) a running job's ownership record names, or None: no record, or
    arq's own ("1")."""
    parts = _record_fields(record)
    if len(parts) < 2:
        return None
    try:
        return float(parts[0])
    except ValueError:
        return None


def result_key(job_id: str) -> str:
    return result_key_prefix + job_id


def retry_key(job_id: str) -> str:
    return retry_key_prefix + job_id


def group_key(job_id: str) -> str:
    """The per-key-limit key a job was given at enqueue (absent: none, or derived from a keyword argument)."""
    return GROUP_PREFIX + job_id


def logs_key(job_id: str) -> str:
    """The log lines a job's tasks wrote (``arqscale.core.job_logs``)."""
    return LOGS_PREFIX + job_id


def callback_key(job_id: str) -> str:
    """The URL that gets this job's events as webhooks (absent: none)."""
    return CALLBACK_PREFIX + job_id


def progress_key(job_id: str) -> str:
    return PROGRESS_PREFIX + job_id


def error_key(job_id: str) -> str:
    """The last error of a job that is waiting for a retry (JSON: error, attempt, at)."""
    return ERROR_PREFIX + job_id


def is_cluster(redis: object) -> bool:
    """Whether ``redis`` is a Redis Cluster client: the key layout follows the client a process was given."""
    # Looked up, not imported: a process that never made a cluster client need not load the modules.
    for module_name in ("redis.asyncio.cluster", "redis.cluster"):
        module = sys.modules.get(module_name)
        if module is not None and isinstance(redis, module.RedisCluster):
            return True
    return False


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue and of its jobs, in one of two layouts.

    - **arq's** (one Redis server, or Sentinel): arq's own names for the queue and its jobs, so plain arq
      producers and arq's ``Job`` helpers keep working; arqscale's per-queue keys under ``arqscale:<queue>:``.
    - **cluster** (Redis Cluster): every key of the queue, its jobs' included, under ``arqscale:{<queue>}:``.
      The ``{<queue>}`` hash tag puts all of them in one slot, so each script touches one slot (Redis
      refuses a script whose keys span slots) and queues spread over the shards. Queue names cannot
      hold braces (``spec.QUEUE_NAME_RE``), so the tag is exactly the name. arq writes its job keys with
      fixed prefixes (``arq:job:<id>``), and arq has no cluster client anyway: plain arq producers cannot
      enqueue here (docs/reliability.md, "Redis Cluster").
    """

    name: str
    queue: str
    base: str  # arqscale's per-queue prefix: "arqscale:<queue>:" or "arqscale:{<queue>}:"
    cluster: bool = False
    # Per-job key prefixes: the job id follows each.
    job_prefix: str = job_key_prefix
    in_progress_prefix: str = in_progress_key_prefix
    retry_prefix: str = retry_key_prefix
    result_prefix: str = result_key_prefix
    progress_prefix: str = PROGRESS_PREFIX
    error_prefix: str = ERROR_PREFIX
    group_prefix: str = GROUP_PREFIX
    logs_prefix: str = LOGS_PREFIX
    callback_prefix: str = CALLBACK_PREFIX
    abort: str = abort_jobs_ss  # arq's cancel requests: one set for every queue in arq's layout

    @classmethod
    def for_queue(cls, name: str, queue_key: str, *, cluster: bool = False) -> QueueKeys:
        if not cluster:
            return cls(name=name, queue=queue_key, base=f"arqscale:{name}:")
        base = f"arqscale:{{{name}}}:"
        return cls(
            name=name,
            queue=base + "queue",
            base=base,
            cluster=True,
            job_prefix=base + "job:",
            in_progress_prefix=base + "in-progress:",
            retry_prefix=base + "retry:",
            result_prefix=base + "result:",
            progress_prefix=base + "progress:",
            error_prefix=base + "error:",
            group_prefix=base + "group:",
            logs_prefix=base + "logs:",
            callback_prefix=base + "callback:",
            abort=base + "abort",
        )

    @classmethod
    def of(cls, spec: QueueSpec, redis: object) -> QueueKeys:
        """The keys of ``spec``'s queue in the layout of ``redis``'s topology."""
        return cls.for_queue(spec.name, spec.queue_key, cluster=is_cluster(redis))

    # -- per-queue keys (module docstring)
    @property
    def active(self) -> str:
        return self.base + "active"

    @property
    def paused(self) -> str:
        return self.base + "paused"

    @property
    def starts(self) -> str:
        return self.base + "starts"

    @property
    def wake(self) -> str:
        return self.base + "wake"

    @property
    def dlq(self) -> str:
        return self.base + "dlq"

    @property
    def dlq_index(self) -> str:
        return self.base + "dlq:index"

    @property
    def completed(self) -> str:
        return self.base + "completed"

    @property
    def workers(self) -> str:
        return self.base + "workers"

    @property
    def groups(self) -> str:
        """Prefix of the per-key limit keys (docs/design.md, "Per-key limits")."""
        return self.base + "g:"

    @property
    def events(self) -> str:
        return self.base + "events"

    @property
    def totals(self) -> str:
        return self.base + "totals"

    @property
    def history(self) -> str:
        return self.base + "history"

    @property
    def marker(self) -> str:
        return self.base + "marker"

    @property
    def own_change(self) -> str:
        """Written with every change of the queue key that made no job ready (taken, ended) or that wakes a
        worker by itself (enqueued), so workers drop the client-tracking invalidation (worker/invalidation.py)."""
        return self.queue + OWN_CHANGE_SUFFIX

    def pick(self, worker_id: str, lane: int = 0) -> str:
        """A worker's last pickup in one of its lanes (round trips it keeps in flight at once): its token, then
        the ids it took."""
        return f"{self.base}pick:{worker_id}" if lane == 0 else f"{self.base}pick:{worker_id}:{lane}"

    def worker_record(self, worker_id: str) -> str:
        return f"{self.base}worker:{worker_id}"

    # -- per-job keys
    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def in_progress(self, job_id: str) -> str:
        return self.in_progress_prefix + job_id

    def retry(self, job_id: str) -> str:
        return self.retry_prefix + job_id

    def result(self, job_id: str) -> str:
        return self.result_prefix + job_id

    def progress(self, job_id: str) -> str:
        return self.progress_prefix + job_id

    def error(self, job_id: str) -> str:
        return self.error_prefix + job_id

    def group(self, job_id: str) -> str:
        return self.group_prefix + job_id

    def logs(self, job_id: str) -> str:
        return self.logs_prefix + job_id

    def callback(self, job_id: str) -> str:
        return self.callback_prefix + job_id

    def lua_prefixes(self) -> dict[str, str]:
        """What the ``'@NAME@'`` tokens of the Lua scripts stand for in this layout (``lua.LuaTemplate``)."""
        return {
            "IP": self.in_progress_prefix,
            "JOB": self.job_prefix,
            "RETRY": self.retry_prefix,
            "RESULT": self.result_prefix,
            "ERR": self.error_prefix,
            "PROG": self.progress_prefix,
            "LOGS": self.logs_prefix,
            "ABORT": self.abort,
            "GROUP": self.group_prefix,
            "CALLBACK": self.callback_prefix,
        }
