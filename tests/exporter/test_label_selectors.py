"""Kubernetes label selector parsing and matching (pure)."""

from __future__ import annotations

import pytest

from arqscale.exporter.label_selectors import Operator, Requirement, SelectorError, parse

EMAIL = {"queue": "email"}
EXPORTS = {"queue": "exports"}
NONE: dict[str, str] = {}


@pytest.mark.parametrize(
    ("text", "email", "exports", "unlabelled"),
    [
        ("", True, True, True),
        ("queue=email", True, False, False),
        ("queue==email", True, False, False),
        ("  queue  =  email ", True, False, False),
        ("queue!=email", False, True, True),
        ("queue in (email,exports)", True, True, False),
        ("queue in (email, image_processing)", True, False, False),
        ("queue notin (email)", False, True, True),
        ("queue", True, True, False),
        ("!queue", False, False, True),
        ("queue,queue!=exports", True, False, False),
        ("queue=email,queue=exports", False, False, False),
        ("app.kubernetes.io/name=x", False, False, False),
        ("queue notin (a,b),!app", True, True, True),
    ],
)
def test_matching(text: str, email: bool, exports: bool, unlabelled: bool) -> None:
    selector = parse(text)
    assert (selector.matches(EMAIL), selector.matches(EXPORTS), selector.matches(NONE)) == (email, exports, unlabelled)


def test_parsed_structure() -> None:
    selector = parse("queue in (a, b),!zone,tier!=x,app")
    assert selector.requirements == (
        Requirement("queue", Operator.IN, frozenset({"a", "b"})),
        Requirement("zone", Operator.DOES_NOT_EXIST),
        Requirement("tier", Operator.NOT_EQUALS, frozenset({"x"})),
        Requirement("app", Operator.EXISTS),
    )
    assert selector.values_of("queue") == {"a", "b"}


def test_empty_value_is_legal() -> None:
    assert parse("queue=").matches({"queue": ""})
    assert not parse("queue=").matches(EMAIL)


def test_queue_names_that_are_not_dns_safe() -> None:
    # Queue names are the real ones: underscores, dots, a trailing dash.
    assert parse("queue=image_processing").matches({"queue": "image_processing"})
    assert parse("queue in (a.b, c-)").matches({"queue": "c-"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("queue=email,", "expected a label key, got the end"),
        (",queue", "expected a label key, got ','"),
        ("queue in email", "expected '(' to open the value set"),
        ("queue in (email", "expected ')' to close the value set, got the end"),
        ("queue in ()", "cannot be empty"),
        ("queue notin (a b)", "expected ')' to close the value set, got 'b'"),
        ("queue > 3", "compares numbers"),
        ("queue ~ email", "expected one of '=', '==', '!=', 'in', 'notin' after 'queue', got '~'"),
        ("queue=a b", "expected ',' between requirements, got 'b'"),
        ("!queue=email", "'!queue' takes no operator or value"),
        ("-queue=email", "'-queue' is not a valid label key"),
        ("queue=em@il", "'em@il' is not a valid label value"),
        ("queue=" + "x" * 64, "is not a valid label value"),
        ("queue==(x)", "'(' is not a valid label value"),
    ],
)
def test_errors_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse(text)
    assert problem in str(info.value)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "required"),
    [
        ("", None),
        ("queue!=a", None),
        ("queue=a", {"a"}),
        ("queue in (a,b),queue!=b", {"a", "b"}),
        ("queue in (a,b),queue=b", {"b"}),
        ("queue=a,queue=b", set()),
        ("app=x", None),
    ],
)
def test_required_values(text: str, required: set[str] | None) -> None:
    assert parse(text).required_values("queue") == (None if required is None else frozenset(required))
