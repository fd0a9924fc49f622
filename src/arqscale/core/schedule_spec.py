"""A schedule's definition and its ticks: when a job is due, computed from a cron expression or an interval.

Declared per queue under ``schedules:`` in the queue spec (a map keyed by schedule name), or created
at run time (API, CLI, Python). Everything here is pure: no Redis, no clock. The Redis side, and which
worker enqueues a tick, live in ``arqscale.core.schedules``; docs/design.md, "Schedules".

Cron expressions are parsed and evaluated by ``cronsim`` (healthchecks.io's evaluator, which follows
Debian cron, daylight-saving quirks included), never by a parser of our own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, model_validator

# At most 40 characters: the job id `sched:<queue>:<name>:<tick ms>` must fit arq's 128 (queue names: 63).
SCHEDULE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}$")
TASK_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
MAX_EVERY_SECONDS = 366 * 86400
# The shapes only, for the JSON schemas (the chart's values.schema.json refuses a malformed value at `helm
# install`): 5 or 6 fields of cron characters, and an IANA zone name's characters. Nothing cronsim or the tz
# database accepts is refused; the full check (cronsim, ZoneInfo) is the model validator's, in every process.
CRON_SHAPE = r"^\s*[0-9A-Za-z*/,#-]+(\s+[0-9A-Za-z*/,#-]+){4,5}\s*$"
ZONE_SHAPE = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
# cronsim gives up after 50 years without a match; a tick is found long before, or never.
_MAX_CRON_STEPS = 10_000

Missed = Literal["skip", "run_once"]


class ScheduleFields(BaseModel):
    """When a schedule ticks and what each tick enqueues (the body of ``PUT .../schedules/{name}``)."""

    # Unknown keys are typos, as in the rest of the queue spec.
    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first",
        json_schema_extra={"pattern": CRON_SHAPE},
    )
    timezone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="IANA time zone the cron expression is read in",
        json_schema_extra={"pattern": ZONE_SHAPE},
    )
    every: float | None = Field(
        default=None,
        ge=0.1,  # a finer "schedule" is a job generator: one script call per tick on every worker
        le=MAX_EVERY_SECONDS,
        description="fixed interval in seconds instead of cron (ticks at multiples of it since the epoch)",
    )
    function: str = Field(
        min_length=1, max_length=200, pattern=TASK_NAME_RE.pattern, description="task name, e.g. send_report"
    )
    args: list[Any] = Field(default_factory=list, description="positional arguments of each job")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of each job")
    priority: int | None = Field(default=None, ge=0, le=9, description="0 is the most urgent; the queue's default")
    jitter: float = Field(default=0, ge=0, le=86400, description="each job waits a random 0..jitter seconds")
    missed: Missed = Field(
        default="skip",
        description="ticks more than `grace` seconds late (no worker ran): skip them, or run one job for them all",
    )
    grace: float = Field(
        default=60,
        ge=1,
        le=MAX_EVERY_SECONDS,
        description="a tick this late still runs (a worker restart or a Redis failover loses no tick)",
    )

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleFields:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give either cron or every")
        if self.every is not None and self.timezone != "UTC":
            raise ValueError("timezone applies to cron only; an interval counts real seconds")
        if self.cron is not None:
            zone = parse_zone(self.timezone)
            try:
                CronSim(self.cron, datetime(2000, 1, 1, tzinfo=zone))
            except CronSimError as exc:
                raise ValueError(f"cron: {exc}") from None
        return self

    @property
    def task_name(self) -> str:
        """What the job is enqueued as: the last part of an import path, as producers name it."""
        return self.function.rsplit(".", 1)[-1]

    @property
    def every_ms(self) -> int:
        assert self.every is not None
        return max(1, round(self.every * 1000))

    @property
    def grace_ms(self) -> int:
        return round(self.grace * 1000)


class Schedule(ScheduleFields):
    """A named schedule of one queue."""

    name: str = Field(pattern=SCHEDULE_NAME_RE.pattern, description="unique within its queue")


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a key naming a directory of the tz database; ValueError: a path, not a key.
        raise ValueError(f"timezone: unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from None


def first_tick_after(fields: ScheduleFields, after_ms: int) -> int | None:
    """The first tick strictly after ``after_ms`` (epoch ms), or None when the cron expression never matches again.

    Intervals tick at multiples of ``every`` since the epoch (as BullMQ's ``every``), so every worker computes
    the same ticks. Cron ticks are cronsim's, in the schedule's time zone: in a daylight-saving gap a job that
    would fall into the skipped hour runs when the clock resumes, and in the repeated hour it runs once
    (Debian cron's behaviour; expressions with a `*` hour or minute, or 6 fields, tick in real time instead).
    """
    if fields.every is not None:
        every = fields.every_ms
        return (after_ms // every + 1) * every
    assert fields.cron is not None
    start = datetime.fromtimestamp(after_ms / 1000, parse_zone(fields.timezone))
    ticks = CronSim(fields.cron, start)
    # In the repeated hour of a fall-back, cronsim counts wall-clock time: a tick it returns can lie before
    # `start` in real time. Walk on until one is really later, so a tick never goes backwards.
    for _ in range(_MAX_CRON_STEPS):
        try:
            tick = round(next(ticks).timestamp() * 1000)
        except StopIteration:
            return None
        if tick > after_ms:
            return tick
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a due tick: enqueue a job for it or not, and the tick to wait for next (None: never)."""

    enqueue: bool
    next_tick: int | None
    missed: bool  # the tick was more than `grace` late


def decide(fields: ScheduleFields, tick_ms: int, now_ms: int) -> Decision:
    """A tick that is at most ``grace`` late runs; an older one follows ``missed``. Ticks older than ``grace``
    after it are passed over: the next tick is the first one after both ``tick`` and ``now - grace``."""
    late = now_ms - tick_ms > fields.grace_ms
    enqueue = not late or fields.missed == "run_once"
    return Decision(enqueue, first_tick_after(fields, max(tick_ms, now_ms - fields.grace_ms)), late)


def job_id(queue: str, name: str, tick_ms: int) -> str:
    """One id per tick: a second enqueue of the same tick (a resent script, a Redis that lost its last
    writes) is refused by the enqueue itself."""
    return f"sched:{queue}:{name}:{tick_ms}"


def from_arq_cron(
    *,
    month: int | set[int] | None = None,
    day: int | set[int] | None = None,
    weekday: int | str | set[int] | None = None,
    hour: int | set[int] | None = None,
    minute: int | set[int] | None = None,
    second: int | set[int] | None = 0,
) -> str:
    """The cron expression (6 fields, seconds first) of an ``arq.cron(...)`` timing, for porting arq cron jobs.

    arq counts weekdays from Monday = 0 (``datetime.weekday()``) or names them ('mon'); cron from Sunday = 0.
    None means every value, as in arq. arq runs a job when day AND weekday match, cron when either does
    (when both are restricted), so a timing with both has no cron form and is refused.
    """
    if day is not None and weekday is not None:
        raise ValueError(
            "arq matches day AND weekday, cron either of them: split it into two schedules or filter in the task"
        )
    names = ["mon", "tues", "wed", "thurs", "fri", "sat", "sun"]  # arq.cron.WEEKDAYS

    def field(value: int | str | set[int] | None, *, weekdays: bool = False) -> str:
        if value is None:
            return "*"
        items: list[int | str] = sorted(value) if isinstance(value, set) else [value]
        out = []
        for item in items:
            if isinstance(item, str):
                item = names.index(item.lower())
            out.append(str((item + 1) % 7) if weekdays else str(item))
        return ",".join(out)

    parts = [field(second), field(minute), field(hour), field(day), field(month), field(weekday, weekdays=True)]
    return " ".join(parts)
