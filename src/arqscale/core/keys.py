"""Every Redis key arqscale touches, in one place.

arq's own keys stay exactly as arq writes them, so plain arq producers and arq's ``Job`` helpers keep
working: the queue sorted set (``arq:queue:<name>``, score = when the job may run), ``arq:job:<id>``
(the payload), ``arq:in-progress:<id>``, ``arq:retry:<id>`` and ``arq:result:<id>``.

arqscale adds, per queue, under ``arqscale:<queue>:``:

- ``active``: sorted set job id -> lease expiry (ms). A running job's entry is renewed by its
  worker's heartbeat; a crashed worker's entries simply expire, so counting ``active`` needs no cleanup.
- ``paused``: present while the queue is paused.
- ``rate``: fixed-window counter of job starts (the cross-process rate limit).
- ``wake``: pub/sub channel our enqueue path publishes to, so idle workers pick up at once.
- ``dlq`` (hash id -> JSON entry) and ``dlq:index`` (sorted set id -> failed ms): the dead-letter store.
- ``completed``: sorted set id -> finished ms, the retention index behind the ``completed`` count.
- ``workers``: sorted set worker id -> heartbeat expiry (ms), for status pages.

and per job ``arqscale:progress:<id>`` (JSON progress reported by the task) and
``arqscale:error:<id>`` (the last error while a retry is pending).

The in-progress key doubles as the heartbeat lease: it is set with a short TTL (``lease_seconds``)
and renewed while the job runs, so a SIGKILLed worker's job runs again within seconds, not after
arq's job-timeout-long expiry.
"""

from __future__ import annotations

from dataclasses import dataclass

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

PROGRESS_PREFIX = "arqscale:progress:"
ERROR_PREFIX = "arqscale:error:"


def job_key(job_id: str) -> str:
    return job_key_prefix + job_id


def in_progress_key(job_id: str) -> str:
    return in_progress_key_prefix + job_id


def result_key(job_id: str) -> str:
    return result_key_prefix + job_id


def retry_key(job_id: str) -> str:
    return retry_key_prefix + job_id


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
    rate: str
    wake: str
    dlq: str
    dlq_index: str
    completed: str
    workers: str

    @classmethod
    def for_queue(cls, name: str, queue_key: str) -> QueueKeys:
        base = f"arqscale:{name}:"
        return cls(
            queue=queue_key,
            active=base + "active",
            paused=base + "paused",
            rate=base + "rate",
            wake=base + "wake",
            dlq=base + "dlq",
            dlq_index=base + "dlq:index",
            completed=base + "completed",
            workers=base + "workers",
        )
