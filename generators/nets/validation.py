"""Config checks shared by the family builders: one clear message per bad value."""

from __future__ import annotations

from typing import Any


def _fail(family: str, key: str, expected: str, value: Any) -> None:
    raise ValueError(f"{family} config {key!r} must be {expected}, got {value!r}")


def positive_int(family: str, config: dict, key: str) -> int:
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        _fail(family, key, "a positive integer", value)
    return value


def boolean(family: str, config: dict, key: str) -> bool:
    value = config[key]
    if not isinstance(value, bool):
        _fail(family, key, "true or false", value)
    return value


def number_in(family: str, config: dict, key: str, low: float, high: float | None = None,
              *, low_open: bool = False) -> float:
    """A number in [low, high] ((low, high] with ``low_open``; no upper bound for None)."""
    value = config[key]
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and (value > low if low_open else value >= low) and (high is None or value <= high))
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
        _fail(family, key, f"a number in {bounds}", value)
    return float(value)


def adam_betas(family: str, config: dict, key: str = "betas") -> tuple[float, float]:
    betas = config[key]
    if not (isinstance(betas, tuple) and len(betas) == 2
            and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
        _fail(family, key, "two numbers in [0, 1)", betas)
    return betas


def power_of_two(family: str, config: dict, key: str, low: int, high: int) -> int:
    value = positive_int(family, config, key)
    if value & (value - 1) or not low <= value <= high:
        _fail(family, key, f"a power of two from {low} to {high}", value)
    return value


def augment_policy(family: str, config: dict, key: str = "diffaugment") -> str:
    """A DiffAugment policy string (``generators.augment``): parts joined by commas, or ""."""
    from ..augment import parse_policy

    value = config[key]
    if not isinstance(value, str):
        _fail(family, key, 'a string such as "color,translation,cutout" (or "" for none)', value)
    try:
        parse_policy(value)
    except ValueError as exc:
        raise ValueError(f"{family} config {key!r}: {exc}") from None
    return value
