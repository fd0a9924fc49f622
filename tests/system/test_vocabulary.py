"""One vocabulary of job states: the API's models, the dashboard's script and style, and every JSON
sample in the docs use the same words (`completed`, never `complete`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from arqscale.core.job_listing import ListState
from arqscale.core.models import EnqueueResult, JobState, JobStatus

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "arqscale" / "api" / "static"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
JOB_STATES = {s.value for s in JobState}
LIST_STATES = {s.value for s in ListState}


def test_finished_jobs_are_completed_in_every_model() -> None:
    assert "completed" in JOB_STATES and "completed" in LIST_STATES
    assert "complete" not in JOB_STATES | LIST_STATES


def test_the_dashboard_settles_on_the_apis_final_states() -> None:
    script = (STATIC / "dashboard.js").read_text()
    found = re.search(r"const SETTLED = new Set\(\[([^\]]*)\]\)", script)
    assert found, "dashboard.js: SETTLED not found"
    settled = set(json.loads(f"[{found.group(1)}]"))
    # A word the API never answers would keep the page polling forever; a missing one, too.
    assert settled == {"completed", "failed", "dead", "cancelled", "not_found"} and settled <= JOB_STATES


def test_the_dashboards_state_styles_name_real_states() -> None:
    styled = set(re.findall(r"\.state\.([a-z_]+)", (STATIC / "dashboard.css").read_text()))
    queue_states = {"running", "paused", "broken"}  # queues and schedules (broken: an unusable stored definition)
    assert styled and styled <= JOB_STATES | queue_states, styled - JOB_STATES - queue_states
    assert "completed" in styled


def test_every_state_in_the_docs_json_is_a_real_one() -> None:
    seen = 0
    for doc in DOCS:
        text = doc.read_text()
        for key, value in re.findall(r'"(state|status)":\s*"([a-z_]+)"', text):
            seen += 1
            allowed = JOB_STATES if key == "status" else JOB_STATES | LIST_STATES
            assert value in allowed, f"{doc.name}: {key} {value!r}"
    assert seen >= 3


def test_the_documented_list_of_job_states_is_the_models() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    found = re.search(r"`state` is one of ((?:`[a-z_]+`(?:, | \(404\)\.?| )?)+)", text)
    assert found, "docs/api.md: the list of states is gone"
    assert set(re.findall(r"`([a-z_]+)`", found.group(1))) == JOB_STATES


def test_the_documented_bodies_parse_as_the_real_models() -> None:
    # docs/api.md shows a 202 body and a job status: both must be what the models produce.
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```console\n(.*?)```", text, re.S)
    enqueue = next(b for b in blocks if "POST" in b)
    body = json.loads(enqueue.strip().splitlines()[-1])
    assert EnqueueResult.model_validate(body).model_dump(mode="json") == body
    status = next(b for b in blocks if "/v1/jobs/" in b)
    doc = json.loads("".join(line for line in status.strip().splitlines()[1:]))
    assert set(doc) == set(JobStatus.model_fields) and JobStatus.model_validate(doc).state is JobState.COMPLETED
