"""Validation of numeric options, shared by the CLI parser and the Python API."""

from __future__ import annotations

import argparse
from typing import Any


def positive_int(value: Any, *, name: str = "value") -> int:
    """``value`` as an int >= 1, or a ValueError naming the option."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1 or (isinstance(value, float) and value != number):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def positive_int_arg(text: str) -> int:
    """argparse ``type=`` for options that must be >= 1."""
    try:
        return positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer") from None


def positive_float_arg(text: str) -> float:
    """argparse ``type=`` for a positive finite number (minutes, seconds)."""
    import math

    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return number
