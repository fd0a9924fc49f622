"""Kubernetes label selectors (``queue=email``, ``queue in (a,b)``, ``!queue``...): parse and match.

The HPA passes the ``selector`` of an External metric to us as the ``labelSelector`` query string,
in the same text form ``kubectl get -l`` takes. We implement the operators Kubernetes has for labels:
``=``, ``==``, ``!=``, ``in``, ``notin``, ``key`` (exists) and ``!key`` (does not exist), with
requirements joined by commas (AND). Errors say what was expected and where, because the message
ends up in ``kubectl describe hpa``. Pure code: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

# Kubernetes label keys: an optional DNS-subdomain prefix and a name of at most 63 characters.
_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?"
_KEY_RE = re.compile(rf"^([a-z0-9]([a-z0-9.\-]{{0,251}}[a-z0-9])?/)?{_NAME}$")
# Values: Kubernetes wants alphanumerics at both ends; queue names may end in '-' or '.', and the
# selector must be able to name every configured queue, so only the character set is enforced.
_VALUE_RE = re.compile(r"^[A-Za-z0-9_.\-]{0,63}$")
_SPECIAL = "!=(),<>"


class SelectorError(ValueError):
    """A selector that cannot be parsed; the message quotes the selector and the problem."""


class Operator(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.operator:
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present
            case Operator.EQUALS | Operator.IN:
                return present and labels[self.key] in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                # As in Kubernetes: a missing label satisfies "!=" and "notin".
                return not present or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    """Requirements that must all hold. No requirement at all selects everything, as in Kubernetes."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def required_values(self, key: str) -> frozenset[str] | None:
        """The only values ``key`` may have to match (from ``=``, ``==`` and ``in``), or None when any may.

        Lets a caller with many candidates (1,000 queues) look up the few named instead of testing all.
        """
        allowed: frozenset[str] | None = None
        for r in self.requirements:
            if r.key == key and r.operator in (Operator.EQUALS, Operator.IN):
                allowed = r.values if allowed is None else allowed & r.values
        return allowed

    def values_of(self, key: str) -> frozenset[str]:
        """Every value the selector names for ``key`` (for "did you mean" messages)."""
        names: set[str] = set()
        for r in self.requirements:
            if r.key == key:
                names |= r.values
        return frozenset(names)


def parse(text: str) -> Selector:
    """Parse a selector string; raise ``SelectorError`` with a clear message on any mistake."""
    tokens = list(_tokenize(text))
    parser = _Parser(text, tokens)
    return parser.selector()


def _tokenize(text: str) -> Iterator[str]:
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith(("==", "!="), i):
            yield text[i : i + 2]
            i += 2
        elif ch in _SPECIAL:
            yield ch
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _SPECIAL:
                i += 1
            yield text[start:i]


class _Parser:
    def __init__(self, text: str, tokens: list[str]) -> None:
        self.text = text
        self.tokens = tokens
        self.pos = 0

    def fail(self, problem: str) -> SelectorError:
        return SelectorError(f"invalid label selector {self.text!r}: {problem}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token

    def selector(self) -> Selector:
        if not self.tokens:
            return Selector()
        requirements = [self.requirement()]
        while self.peek() is not None:
            if self.take() != ",":
                raise self.fail(f"expected ',' between requirements, got {self.tokens[self.pos - 1]!r}")
            requirements.append(self.requirement())
        return Selector(tuple(requirements))

    def key(self) -> str:
        token = self.take()
        if token is None or token in _SPECIAL or token in ("==", "!="):
            raise self.fail(f"expected a label key, got {'the end' if token is None else repr(token)}")
        if not _KEY_RE.match(token):
            raise self.fail(f"{token!r} is not a valid label key")
        return token

    def value(self) -> str:
        token = self.peek()
        # An empty value is legal ("queue=" selects an empty label), so stop at ',', ')' or the end.
        if token is None or token in (",", ")"):
            return ""
        self.pos += 1
        if token in _SPECIAL or token in ("==", "!=") or not _VALUE_RE.match(token):
            raise self.fail(f"{token!r} is not a valid label value")
        return token

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            key = self.key()
            if self.peek() not in (None, ","):
                raise self.fail(f"'!{key}' takes no operator or value")
            return Requirement(key, Operator.DOES_NOT_EXIST)
        key = self.key()
        op = self.peek()
        if op in (None, ","):
            return Requirement(key, Operator.EXISTS)
        self.take()
        if op in ("=", "=="):
            return Requirement(key, Operator.EQUALS, frozenset([self.value()]))
        if op == "!=":
            return Requirement(key, Operator.NOT_EQUALS, frozenset([self.value()]))
        if op == "in":
            return Requirement(key, Operator.IN, self.value_set())
        if op == "notin":
            return Requirement(key, Operator.NOT_IN, self.value_set())
        if op in ("<", ">"):
            raise self.fail(f"operator {op!r} compares numbers and does not apply to label {key!r}")
        raise self.fail(f"expected one of '=', '==', '!=', 'in', 'notin' after {key!r}, got {op!r}")

    def value_set(self) -> frozenset[str]:
        if self.take() != "(":
            raise self.fail("expected '(' to open the value set")
        if self.peek() == ")":
            raise self.fail("the value set of 'in' and 'notin' cannot be empty")
        values = [self.value()]
        while self.peek() == ",":
            self.take()
            values.append(self.value())
        closing = self.take()
        if closing != ")":
            got = "the end" if closing is None else repr(closing)
            raise self.fail(f"expected ')' to close the value set, got {got}")
        return frozenset(values)
