"""The worker's one-thread JSON serializer writes exactly what ``json_dumps`` writes, and fails the same way.

Generated values: nested lists and dicts of every JSON scalar (floats with NaN and infinities, any Unicode),
keys of the kinds ``json`` converts (int, float, bool, None), values it refuses, and cycles. The encoder keeps
state between calls (its circular-reference marks), so each example runs a sequence of calls through one
encoder: a failure must leave nothing behind that changes the next call's bytes.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from arqscale.core import serializers

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)
keys = st.one_of(st.text(), st.integers(-1000, 1000), st.booleans(), st.none(), st.floats(allow_nan=False))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=30,
)


class NotData:
    pass


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = [loop]
    return loop


# A payload or result is a dict; some hold what JSON cannot carry, or a cycle.
documents = st.one_of(
    st.dictionaries(st.text(), values, max_size=6),
    st.dictionaries(st.text(), values, max_size=3).map(lambda d: {**d, "bad": [NotData()]}),
    st.dictionaries(st.text(), values, max_size=3).map(lambda d: {**d, "cycle": cyclic()}),
)


def outcome(dumps: serializers.Serializer, doc: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", dumps(doc)
    except Exception as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=300, deadline=None)
@given(st.lists(documents, min_size=1, max_size=6))
def test_the_one_thread_serializer_matches_json_dumps_call_after_call(docs: list[dict[str, Any]]) -> None:
    fast = serializers.json_dumps_one_thread()
    for doc in docs:
        assert outcome(fast, doc) == outcome(serializers.json_dumps, doc)


def test_a_worker_queue_gets_the_one_thread_serializer_and_others_the_shared_one() -> None:
    shared, _ = serializers.for_queue("json")
    own, _ = serializers.for_queue("json", one_thread=True)
    assert shared is serializers.json_dumps and own is not serializers.json_dumps
    assert own({"a": [1, "é"]}) == shared({"a": [1, "é"]}) == b'{"a":[1,"\\u00e9"]}'
    assert serializers.for_queue("pickle", one_thread=True)[0] is serializers.pickle_dumps


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(), values, max_size=4))
def test_an_object_in_a_failed_call_encodes_in_the_next_one(data: dict[str, Any]) -> None:
    # The C encoder leaves its marks of the containers it was inside when a value failed; were they kept, the same
    # container sent again (a task retrying with the data it built) would be refused as circular.
    fast = serializers.json_dumps_one_thread()
    holder: dict[str, Any] = {"data": data, "bad": NotData()}
    assert outcome(fast, {"wrap": holder})[0] == "TypeError"
    del holder["bad"]
    assert outcome(fast, {"again": holder}) == ("ok", serializers.json_dumps({"again": holder}))


# What a reader of payloads and results meets: JSON as producers write it, the same with whitespace, a BOM, other
# encodings, or cut short, and bytes that are no JSON at all.
json_texts = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)),
    max_leaves=20,
).map(lambda v: serializers.json.dumps(v, ensure_ascii=False))
raw_inputs = st.one_of(
    json_texts.map(str.encode),
    json_texts,  # plain arq clients may hand str
    st.tuples(
        json_texts, st.sampled_from(["", " ", "\n", "\ufeff", " \t"]), st.sampled_from(["", " ", "\n", "x", "}"])
    ).map(lambda t: (t[1] + t[0] + t[2]).encode()),
    st.tuples(json_texts, st.sampled_from(["utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"])).map(
        lambda t: t[0].encode(t[1])
    ),
    st.tuples(json_texts.map(str.encode), st.integers(0, 40)).map(lambda t: t[0][: t[1]]),
    st.binary(max_size=40),
)


def parsed(loads: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "ok", loads(data)
    except Exception as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=500, deadline=None)
@given(data=raw_inputs)
def test_the_fast_json_reader_reads_what_json_loads_reads_and_fails_as_it_fails(data: bytes | str) -> None:
    ours, theirs = parsed(serializers._parse, data), parsed(serializers.json.loads, data)
    if ours[0] == "ok" and theirs[0] == "ok":  # NaN != NaN: compare the documents' JSON
        assert serializers.json.dumps(ours[1]) == serializers.json.dumps(theirs[1])
    else:
        assert ours == theirs
