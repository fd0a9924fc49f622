"""Schedule definitions and their ticks: validation, intervals, cron in a time zone (daylight saving), the
missed-tick decision, and the arq cron() mapping. Pure: no Redis, no clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
from cronsim import CronSim, CronSimError
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from arqscale.core.schedule_spec import (
    CRON_SHAPE,
    ZONE_SHAPE,
    ScheduleFields,
    decide,
    first_tick_after,
    from_arq_cron,
    job_id,
)
from arqscale.core.spec import QueueConfigError, parse_queues

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def ticks(fields: ScheduleFields, start: datetime, n: int) -> list[datetime]:
    tz = ZoneInfo(fields.timezone)
    out, t = [], ms(start)
    for _ in range(n):
        nxt = first_tick_after(fields, t)
        assert nxt is not None
        out.append(datetime.fromtimestamp(nxt / 1000, tz))
        t = nxt
    return out


def cron(expr: str, tz: str = "UTC", **extra: Any) -> ScheduleFields:
    return ScheduleFields(cron=expr, timezone=tz, function="report", **extra)


def test_intervals_tick_at_multiples_of_every_since_the_epoch() -> None:
    every = ScheduleFields(every=60, function="f")
    assert first_tick_after(every, 120_000) == 180_000  # strictly after
    assert first_tick_after(every, 120_001) == 180_000
    assert first_tick_after(ScheduleFields(every=0.25, function="f"), 1_000) == 1_250


def test_cron_ticks_strictly_after_the_given_time() -> None:
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert ticks(cron("*/15 * * * *"), start, 3) == [start + timedelta(minutes=15 * i) for i in (1, 2, 3)]
    # six fields: seconds first
    assert ticks(cron("*/20 * * * * *"), start, 2) == [start + timedelta(seconds=20), start + timedelta(seconds=40)]


def test_cron_reads_the_expression_in_its_time_zone() -> None:
    [tick] = ticks(cron("0 9 * * *", "America/New_York"), datetime(2024, 6, 1, 0, 0, tzinfo=UTC), 1)
    assert tick.astimezone(UTC) == datetime(2024, 6, 1, 13, 0, tzinfo=UTC)  # 09:00 EDT


def test_spring_forward_a_time_in_the_skipped_hour_runs_when_the_clock_resumes() -> None:
    # Europe/Berlin, 2024-03-31: 02:00 CET jumps to 03:00 CEST. A fixed time in the gap runs at 03:00 that
    # day (Debian cron, as cronsim documents), then at 02:30 again.
    got = ticks(cron("30 2 * * *", "Europe/Berlin"), datetime(2024, 3, 30, 12, tzinfo=BERLIN), 3)
    assert [t.isoformat() for t in got] == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


def test_spring_forward_hourly_jobs_skip_the_hour_that_does_not_exist() -> None:
    got = ticks(cron("0 * * * *", "Europe/Berlin"), datetime(2024, 3, 31, 0, 30, tzinfo=BERLIN), 3)
    assert [t.isoformat() for t in got] == [
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",  # real time: one hour after the 01:00 tick
        "2024-03-31T04:00:00+02:00",
    ]


def test_fall_back_a_fixed_time_in_the_repeated_hour_runs_once() -> None:
    # Europe/Berlin, 2024-10-27: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice, the job runs once.
    got = ticks(cron("30 2 * * *", "Europe/Berlin"), datetime(2024, 10, 26, 12, tzinfo=BERLIN), 2)
    assert [t.isoformat() for t in got] == ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]


def test_fall_back_hourly_jobs_run_in_both_repeated_hours() -> None:
    # America/New_York, 2024-11-03: 02:00 EDT falls back to 01:00 EST. A `*` hour ticks in real time: 01:30
    # runs twice, an hour apart.
    got = ticks(cron("30 * * * *", "America/New_York"), datetime(2024, 11, 3, 0, 45, tzinfo=NEW_YORK), 3)
    assert [t.isoformat() for t in got] == [
        "2024-11-03T01:30:00-04:00",
        "2024-11-03T01:30:00-05:00",
        "2024-11-03T02:30:00-05:00",
    ]
    assert got[1].timestamp() - got[0].timestamp() == 3600  # (same-zone datetime subtraction is wall-clock)


def test_a_tick_never_goes_back_in_real_time_inside_the_repeated_hour() -> None:
    # From 02:10 CET (the second 02:10 of the fall-back night), wall-clock 02:30 first maps to 02:30 CEST,
    # which lies before it in real time; the next tick must be the next day's.
    second_0210 = datetime(2024, 10, 27, 2, 10, tzinfo=BERLIN, fold=1)
    [tick] = ticks(cron("30 2 * * *", "Europe/Berlin"), second_0210, 1)
    assert tick.isoformat() == "2024-10-28T02:30:00+01:00"


def test_a_cron_that_never_matches_again_has_no_next_tick() -> None:
    assert first_tick_after(cron("0 0 29 2 *"), ms(datetime(2024, 3, 1, tzinfo=UTC))) is not None  # 2028
    # the 1st and 21st of a month, when it is also the month's last Monday (always the 22nd or later)
    assert first_tick_after(cron("* * */20 * 1L"), ms(datetime(2024, 3, 1, tzinfo=UTC))) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"function": "f"}, "give either cron or every"),
        ({"function": "f", "cron": "* * * * *", "every": 5}, "give either cron or every"),
        ({"function": "f", "cron": "61 * * * *"}, "cron: Bad minute"),
        ({"function": "f", "cron": "* * *"}, "cron: Wrong number of fields"),
        ({"function": "f", "cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"function": "f", "cron": "* * * * *", "timezone": "../etc/passwd"}, "unknown time zone"),
        ({"function": "f", "cron": "* * * * *", "timezone": "America"}, "unknown time zone"),
        ({"function": "f", "every": 5, "timezone": "Europe/Berlin"}, "timezone applies to cron only"),
        ({"function": "f", "every": 0}, "greater than or equal to 0.1"),
        ({"function": "f", "every": 5, "grace": 0}, "greater than or equal to 1"),
        ({"function": "f", "every": 5, "missed": "catch_up"}, "'skip' or 'run_once'"),
        ({"function": "f", "every": 5, "jiter": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_definitions_are_refused_with_the_reason(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ScheduleFields.model_validate(body)


def test_decide_runs_a_late_tick_within_grace_and_passes_over_older_ones() -> None:
    every = ScheduleFields(every=10, function="f", grace=30)
    on_time = decide(every, 100_000, 100_050)
    assert (on_time.enqueue, on_time.next_tick, on_time.missed) == (True, 110_000, False)
    late = decide(every, 100_000, 125_000)  # 25 s late: still runs; the next tick is due at once (catch-up)
    assert (late.enqueue, late.next_tick, late.missed) == (True, 110_000, False)
    missed = decide(every, 100_000, 200_000)  # 100 s late: skipped; ticks up to now - grace are passed over
    assert (missed.enqueue, missed.next_tick, missed.missed) == (False, 180_000, True)
    once = decide(every.model_copy(update={"missed": "run_once"}), 100_000, 200_000)
    assert (once.enqueue, once.next_tick, once.missed) == (True, 180_000, True)


def test_job_ids_name_queue_schedule_and_tick_and_fit_arqs_limit() -> None:
    longest = job_id("q" * 63, "s" * 40, 99_999_999_999_999)
    assert longest.startswith("sched:q") and len(longest) <= 128


def test_arq_cron_timings_map_to_cron_expressions() -> None:
    # arq: cron(task, hour={9, 17}, minute=30) -> second 0 (arq's default), minute 30, hours 9 and 17
    assert from_arq_cron(hour={9, 17}, minute=30) == "0 30 9,17 * * *"
    # arq weekdays count from Monday = 0; cron's from Sunday = 0
    assert from_arq_cron(weekday="mon", hour=8, minute=0) == "0 0 8 * * 1"
    assert from_arq_cron(weekday={5, 6}, hour=0, minute=0) == "0 0 0 * * 6,0"
    assert from_arq_cron(second={0, 30}) == "0,30 * * * * *"
    assert from_arq_cron(month=1, day=1, hour=0, minute=0) == "0 0 0 1 1 *"
    with pytest.raises(ValueError, match="day AND weekday"):
        from_arq_cron(day=1, weekday="mon")


def test_arq_cron_mapping_ticks_when_arq_would() -> None:
    from arq.cron import next_cron

    timing: dict[str, Any] = {"weekday": "fri", "hour": {9, 17}, "minute": 30, "second": 15}
    fields = cron(from_arq_cron(**timing))
    start = datetime(2024, 5, 1, 0, 0)
    arq_dt, ours = start, ms(start.replace(tzinfo=UTC))
    for _ in range(5):
        arq_dt = next_cron(arq_dt, microsecond=0, **timing)
        nxt = first_tick_after(fields, ours)
        assert nxt is not None
        ours = nxt
        assert datetime.fromtimestamp(ours / 1000, UTC).replace(tzinfo=None) == arq_dt


def test_queue_spec_declares_schedules_by_name() -> None:
    specs = parse_queues(
        {
            "queues": {
                "reports": {
                    "functions": ["app.tasks.report"],
                    "schedules": {
                        "nightly": {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "function": "report"},
                        "often": {"every": 30, "function": "app.tasks.report", "args": [1], "missed": "run_once"},
                    },
                }
            }
        }
    )
    [nightly, often] = specs["reports"].declared_schedules()
    assert (nightly.name, nightly.cron, nightly.timezone) == ("nightly", "0 3 * * *", "Europe/Berlin")
    assert (often.name, often.task_name, often.args, often.missed) == ("often", "report", [1], "run_once")


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ({"functions": ["a.b"], "schedules": {"x": {"every": 5, "function": "c"}}}, "'c' is not one of this queue"),
        ({"functions": ["a.b"], "schedules": {"bad name": {"every": 5, "function": "b"}}}, "String should match"),
        ({"functions": ["a.b"], "schedules": {"x": {"cron": "* * *", "function": "b"}}}, "Wrong number of fields"),
        (
            {
                "functions": ["a.b"],
                "autoscaling": {"min_replicas": 0},
                "schedules": {"x": {"every": 5, "function": "b"}},
            },
            "min_replicas of at least 1",
        ),
    ],
)
def test_queue_spec_refuses_schedules_its_workers_cannot_run(queue: dict[str, Any], message: str) -> None:
    with pytest.raises(QueueConfigError, match=message):
        parse_queues({"queues": {"q": queue}})


# The JSON schemas' shapes (the chart refuses at install time what does not match) must never refuse what the
# worker's own checks accept: every time zone of the tz database, and any expression cronsim parses.
@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                ["*", "0", "59", "*/5", "1-5", "1-5/2", "MON", "JAN-MAR", "L", "LW", "5L", "MON#2", "1,15"]
            ),
            st.text(alphabet="0123456789*/,-#LWMONTUEFRISAJDC?%.", min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=8,
    ).map(" ".join)
)
def test_the_cron_shape_matches_every_expression_cronsim_accepts(expression: str) -> None:
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError:
        return
    assert re.match(CRON_SHAPE, expression), expression


def test_the_zone_shape_matches_every_known_time_zone() -> None:
    assert [z for z in available_timezones() if not re.match(ZONE_SHAPE, z)] == []
