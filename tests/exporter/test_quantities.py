"""Kubernetes quantity formatting (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from arqscale.exporter.quantities import format_quantity, parse_quantity


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (42, "42"),
        (10**12, "1000000000000"),
        (-3, "-3"),
        (0.0, "0"),
        (42.0, "42"),
        (1.5, "1500m"),
        (0.25, "250m"),
        (0.1 + 0.2, "300m"),  # float noise below the nano-unit is rounded away
        (12.345, "12345m"),
        (0.0004, "400u"),
        (1.23456789, "1234567890n"),
        (-1.5, "-1500m"),
        (1e-10, "0"),
    ],
)
def test_format(value: float, text: str) -> None:
    assert format_quantity(value) == text


@pytest.mark.parametrize("text", ["42", "1500m", "400u", "1234567890n", "0"])
def test_round_trip(text: str) -> None:
    assert format_quantity(float(parse_quantity(text))) == text


def test_parse_values() -> None:
    assert parse_quantity("1500m") == Decimal("1.5")
    assert parse_quantity("7") == 7


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        format_quantity(bad)


def test_bool_is_not_a_number() -> None:
    with pytest.raises(TypeError):
        format_quantity(True)
