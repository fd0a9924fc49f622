"""The queue spec model: defaults, validation and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from arqscale.core.spec import QueueConfigError, demo_queues, load_queues, parse_queues


def test_minimal_queue_gets_sane_defaults() -> None:
    spec = parse_queues({"queues": {"email": {"functions": ["myapp.tasks.send_email"]}}})["email"]
    assert spec.queue_key == "arq:queue:email"
    assert spec.function_names == {"send_email": "myapp.tasks.send_email"}
    assert spec.normal_priority == 1 and spec.priority_levels == 3
    assert spec.effective_drain_timeout == spec.job_timeout
    assert spec.serializer == "json"


def test_redis_key_can_be_overridden() -> None:
    spec = parse_queues({"queues": {"legacy": {"functions": ["a.b"], "redis_key": "arq:queue"}}})["legacy"]
    assert spec.queue_key == "arq:queue"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"functions": ["a.b"], "concurrency": 0}, "queue 'email': concurrency: Input should be greater than or equal"),
        ({"functions": ["a.b"], "concurency": 5}, "queue 'email': concurency: Extra inputs are not permitted"),
        ({"functions": []}, "queue 'email': (queue): Value error, functions: an arq queue needs at least one"),
        ({"functions": ["not a path"]}, "queue 'email': functions.0: String should match pattern"),
        ({"functions": ["a.b"], "job_timeout": 60, "drain_timeout": 30}, "drain_timeout (30.0) must be at least"),
        ({"functions": ["a.x", "b.x"]}, "two functions share the name x"),
        ({"functions": ["a.b"], "default_priority": 3}, "default_priority (3) must be below priority_levels (3)"),
        (
            {"functions": ["a.b"], "autoscaling": {"min_replicas": 5, "max_replicas": 2}},
            "autoscaling: Value error, max_replicas (2) is below min_replicas (5)",
        ),
        ({"functions": ["a.b"], "rate_limit": {"max_jobs": 0}}, "rate_limit.max_jobs: Input should be greater than 0"),
        ("fast", "queue 'email': expected a map of settings, got str"),
    ],
)
def test_invalid_queue_names_queue_and_field(body: object, message: str) -> None:
    with pytest.raises(QueueConfigError) as info:
        parse_queues({"queues": {"email": body}}, "queues.yaml")
    assert str(info.value).startswith("queues.yaml: ")
    assert message in str(info.value)


def test_invalid_queue_name() -> None:
    with pytest.raises(QueueConfigError, match=r"queue 'bad name!': name: String should match pattern"):
        parse_queues({"queues": {"bad name!": {"functions": ["a.b"]}}})


def test_two_queues_on_one_key_are_refused() -> None:
    with pytest.raises(QueueConfigError, match="two queues share the Redis key arq:queue:x"):
        parse_queues({"queues": {"x": {"functions": ["a.b"]}, "y": {"functions": ["a.b"], "redis_key": "arq:queue:x"}}})


def test_bullmq_queue_needs_no_functions() -> None:
    spec = parse_queues({"queues": {"mail": {"backend": "bullmq"}}})["mail"]
    assert spec.backend == "bullmq" and spec.prefix == "bull"


def test_load_queues_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "queues.yaml"
    path.write_text("queues:\n  email:\n    functions: [myapp.tasks.send_email]\n    concurrency: 20\n")
    assert load_queues(path)["email"].concurrency == 20


def test_load_queues_errors_are_readable(tmp_path: Path) -> None:
    with pytest.raises(QueueConfigError, match="cannot read queues file"):
        load_queues(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("queues: [\n")
    with pytest.raises(QueueConfigError, match="not valid YAML"):
        load_queues(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(QueueConfigError, match="expected a non-empty `queues:` map"):
        load_queues(empty)


def test_load_queues_without_a_path_reads_the_configured_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The README's Producer example calls load_queues(): it must see the queues the workers run, not the
    # demo's (a JSON payload on a user's pickle queue goes dead).
    path = tmp_path / "queues.yaml"
    path.write_text("queues:\n  email:\n    functions: [myapp.tasks.send_email]\n    serializer: pickle\n")
    monkeypatch.setenv("ARQSCALE_QUEUES_FILE", str(path))
    # An unrelated bad setting stops the processes that use it, not a producer looking for its queues.
    monkeypatch.setenv("ARQSCALE_API_PORT", "not-a-port")
    for queues in (load_queues(), load_queues(None)):
        assert set(queues) == {"email"} and queues["email"].serializer == "pickle"
    monkeypatch.delenv("ARQSCALE_QUEUES_FILE")
    assert load_queues() == demo_queues()
    monkeypatch.setenv("ARQSCALE_QUEUES_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(QueueConfigError, match=r"missing\.yaml: cannot read queues file"):
        load_queues()


def test_demo_queues_are_valid() -> None:
    queues = demo_queues()
    assert {"email", "exports", "image_processing", "verification"} <= set(queues)
