"""Redis Cluster mode without a cluster: the settings that choose it, the hash-tagged key layout (every key
of a queue in one slot, queues apart), and the Lua templates in both layouts. The same code against real
cluster nodes is in tests/system (the cluster harness)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from redis.crc import key_slot

from arqscale.core import counts, dead_letters, job_listing, producer
from arqscale.core.keys import QueueKeys, job_key, result_key
from arqscale.core.lua import LuaTemplate
from arqscale.core.settings import RedisSettings
from arqscale.core.spec import QUEUE_NAME_RE
from arqscale.worker import pickup

QUEUE_NAMES = st.from_regex(QUEUE_NAME_RE.pattern.replace("*$", "{0,40}$"), fullmatch=True)
JOB_IDS = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=60)


def _every_key(k: QueueKeys, job_id: str) -> list[str]:
    per_queue = [k.queue, k.active, k.paused, k.starts, k.dlq, k.dlq_index, k.completed, k.workers, k.events]
    per_queue += [k.totals, k.history, k.groups + "held", k.pick("w1"), k.worker_record("w1"), k.abort]
    per_job = [k.job, k.in_progress, k.retry, k.result, k.progress, k.error, k.group, k.logs, k.callback]
    return per_queue + [f(job_id) for f in per_job]


@given(QUEUE_NAMES, JOB_IDS)
def test_every_key_of_a_queue_and_its_jobs_shares_one_slot(name: str, job_id: str) -> None:
    k = QueueKeys.for_queue(name, f"arq:queue:{name}", cluster=True)
    slots = {key_slot(key.encode()) for key in _every_key(k, job_id)}
    assert slots == {key_slot(name.encode())}


def test_queues_spread_over_the_slots() -> None:
    names = [f"queue{i}" for i in range(200)]
    slots = {key_slot(QueueKeys.for_queue(n, "", cluster=True).queue.encode()) for n in names}
    assert len(slots) > 190  # one slot each, almost never shared: the cluster's shards split the queues


def test_arq_layout_is_arqs_own_names() -> None:
    k = QueueKeys.for_queue("email", "arq:queue:email")
    assert (k.queue, k.job("j1"), k.result("j1"), k.in_progress("j1")) == (
        "arq:queue:email",
        "arq:job:j1",
        "arq:result:j1",
        "arq:in-progress:j1",
    )
    assert (k.job("j1"), k.result("j1")) == (job_key("j1"), result_key("j1"))
    assert k.abort == "arq:abort" and k.active == "arqscale:email:active"


TEMPLATES = [
    pickup.PICKUP_LUA,
    pickup.FINISH_LUA,
    pickup.HEARTBEAT_LUA,
    pickup.PROGRESS_LUA,
    producer.ENQUEUE,
    counts.ARQ_COUNTS,
    job_listing.LIST_SCRIPT,
    dead_letters.PURGE_IDS_LUA,
    dead_letters.PURGE_RANGE_LUA,
]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.arq.sha[:8])
def test_templates_leave_no_token_in_either_layout(template: LuaTemplate) -> None:
    for script in (template.arq, template.cluster):
        assert not re.search(r"@[A-Z_]+@", script.source)
    assert "arq:job:" not in template.cluster.source and "_kb" not in template.arq.source


def test_a_token_outside_quotes_is_refused_at_import() -> None:
    with pytest.raises(ValueError, match="@JOB@"):
        LuaTemplate("return redis.call('GET', @JOB@ .. ARGV[1])")


def test_cluster_settings_choose_the_topology_and_hide_the_password() -> None:
    s = RedisSettings(cluster_nodes="10.0.0.1:7000, [::1]:7001,node3", password="pa/ss", username="app")
    assert s.topology == "cluster"
    assert s.cluster_addresses() == [("10.0.0.1", 7000), ("::1", 7001), ("node3", 6379)]
    assert s.display_url() == "redis+cluster://app:***@10.0.0.1:7000,[::1]:7001,node3:6379"
    assert "pa/ss" not in s.display_url() and "pa/ss" in s.secrets()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"url": "redis://r:6379"}, "REDIS_URL"),
        ({"host": "r"}, "REDIS_HOST"),
        ({"port": 7000}, "REDIS_PORT"),
        ({"sentinels": "s:26379"}, "REDIS_SENTINELS"),
        ({"db": 3}, "REDIS_DB"),
        ({"wait_replicas": 1}, "REDIS_WAIT_REPLICAS"),
    ],
)
def test_cluster_nodes_refuse_what_a_cluster_cannot_use(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError) as raised:
        RedisSettings(cluster_nodes="n1:7000", **fields)  # type: ignore[arg-type]
    assert named in str(raised.value) and "REDIS_CLUSTER_NODES" in str(raised.value)


@given(st.text(max_size=40))
def test_any_cluster_nodes_text_is_read_or_refused_by_name(text: str) -> None:
    try:
        s = RedisSettings(cluster_nodes=text)
    except ValidationError as exc:
        assert "REDIS_CLUSTER_NODES" in str(exc) or "cluster_nodes" in str(exc)
        return
    if s.cluster_nodes is not None:
        assert all(1 <= port <= 65535 and host for host, port in s.cluster_addresses())
