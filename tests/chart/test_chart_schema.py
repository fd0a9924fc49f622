"""values.schema.json is generated from QueueSpec and kept in sync; every value is documented in place."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from arqscale.chart.schema import build, render
from arqscale.cli.main import main
from arqscale.core.spec import QueueSpec
from chart_support import CHART

SCHEMA_FILE = CHART / "values.schema.json"


def test_chart_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text() == render(), "run `arqscale schema -o helm/arqscale/values.schema.json`"


def test_schema_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == render()


def test_schema_command_check_mode(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    good, stale = tmp_path / "good.json", tmp_path / "stale.json"
    assert main(["schema", "-o", str(good)]) == 0
    stale.write_text(good.read_text().replace("job_timeout", "jobtimeout"))
    assert main(["schema", "--check", str(good)]) == 0
    assert main(["schema", "--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err


def test_queue_entries_use_the_queue_spec_fields() -> None:
    queue = build()["$defs"]["QueueSpec"]
    fields = set(QueueSpec.model_fields) - {"name"}
    assert set(queue["properties"]) == fields | {"worker"}
    assert queue["additionalProperties"] is False
    # nested models are referenced from the root, where helm's validator resolves them
    text = json.dumps(build())
    for ref in re.findall(r'"\$ref": "#/\$defs/(\w+)"', text):
        assert ref in build()["$defs"]


def _leaf_paths(node: Any, prefix: str = "") -> set[str]:
    """Dotted paths of values.yaml, stopping at free-form maps/lists (they are documented as one value)."""
    if not isinstance(node, dict) or not node:
        return {prefix}
    paths: set[str] = set()
    for key, value in node.items():
        paths |= _leaf_paths(value, f"{prefix}.{key}" if prefix else key)
    return paths


def _documented() -> set[str]:
    return set(re.findall(r"^\s*## @param (\S+) \S", (CHART / "values.yaml").read_text(), flags=re.M))


def test_every_value_is_documented_in_place() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = _documented()
    missing = sorted(p for p in _leaf_paths(values) if not any(p == d or p.startswith(d + ".") for d in documented))
    assert missing == []
    # and every documented path exists
    for path in documented:
        node: Any = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, path
            node = node[part]


def test_every_documented_value_is_in_the_schema() -> None:
    schema = build()
    for path in _documented():
        node = schema
        for part in path.split("."):
            assert part in node.get("properties", {}), path
            node = node["properties"][part]
