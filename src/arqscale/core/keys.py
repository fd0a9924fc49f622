"""Every Redis key arqscale touches, in one place.

arq's own keys stay exactly as arq writes them, so plain arq producers and arq's ``Job`` helpers keep
working: the queue sorted set (``arq:queue:<name>``, score = when the job may run), ``arq:job:<id>``
(the payload), ``arq:in-progress:<id>``, ``arq:retry:<id>`` and ``arq:result:<id>``.

arqscale adds, per queue, under ``arqscale:<queue>:``:

- ``active``: sorted set job id -> lease expiry (Redis ms). A running job leaves the queue's sorted
  set at pickup and lives here; its worker's heartbeat renews the entry, and an expired one (a dead or
  stalled worker) is swept back into the queue by the next pickup or heartbeat of any worker.
- ``paused``: present while the queue is paused.
- ``starts``: sorted set of recent job starts (the cross-process sliding-window rate limit).
- ``pick:<worker id>``: the token and job ids of a worker's last pickup, so a resent pickup (its reply
  was lost) returns the same jobs without counting a try again.
- ``wake``: pub/sub channel our enqueue path publishes to, so idle workers pick up at once.
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

The in-progress key holds the job's ownership record, ``"<queue score> <pickup token>"``: arq only checks
that it exists (``Job.status()`` says in progress), arqscale's scripts honour an outcome or a heartbeat
only from the token it names (docs/design.md, "Ownership").
"""

from __future__ import annotations

from dataclasses import dataclass

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

PROGRESS_PREFIX = "arqscale:progress:"
ERROR_PREFIX = "arqscale:error:"
# A job's key for per-key limits when given at enqueue (``group=``); same TTL as its payload.
GROUP_PREFIX = "arqscale:group:"
# A job's log lines (list of JSON entries, see ``job_logs``); expires and is deleted with its result.
LOGS_PREFIX = "arqscale:logs:"
# A job's callback URL (given at enqueue, queues with webhooks.callbacks); same TTL as its payload.
CALLBACK_PREFIX = "arqscale:callback:"


def job_key(job_id: str) -> str:
    return job_key_prefix + job_id


def in_progress_key(job_id: str) -> str:
    return in_progress_key_prefix + job_id


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


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue."""

    queue: str
    active: str
    paused: str
    starts: str
    wake: str
    dlq: str
    dlq_index: str
    completed: str
    workers: str
    events: str = ""  # the job event stream (arqscale.core.events)
    totals: str = ""  # the per-queue counters hash (arqscale.core.events.TOTAL_FIELDS)
    groups: str = ""  # prefix of the per-key limit keys (docs/design.md, "Per-key limits")

    @classmethod
    def for_queue(cls, name: str, queue_key: str) -> QueueKeys:
        base = f"arqscale:{name}:"
        return cls(
            queue=queue_key,
            active=base + "active",
            paused=base + "paused",
            starts=base + "starts",
            wake=base + "wake",
            dlq=base + "dlq",
            dlq_index=base + "dlq:index",
            completed=base + "completed",
            workers=base + "workers",
            groups=base + "g:",
            events=base + "events",
            totals=base + "totals",
        )

    def pick(self, worker_id: str) -> str:
        """A worker's last pickup: its token, then the ids it took."""
        return f"{self.active.removesuffix('active')}pick:{worker_id}"
