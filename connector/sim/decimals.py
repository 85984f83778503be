"""Decimal text as the server writes it: fixed-point strings, plain or at the full 28-digit scale.

The real gateway keeps prices in a 96-bit decimal (at most 28 fractional digits, a mantissa below
2**96), and its mock feed never rounds the random walk, so prices come out as
``"149.65067162874413708130231939"``. The simulator's default (``plain``) keeps the short,
human-sized prices of earlier versions; ``full`` reproduces the server's long ones, so a client's
parsing and storage are tested against what it will really see.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Literal

Scale = Literal["plain", "full"]
SCALES: tuple[Scale, ...] = ("plain", "full")

#: Largest mantissa (exclusive) and scale of the server's decimal type.
_MAX_MANTISSA = 2**96
_MAX_SCALE = 28
#: Enough precision for every intermediate product before the final rounding.
_WIDE = Context(prec=60, rounding=ROUND_HALF_EVEN)


def dec_str(value: Decimal) -> str:
    """Fixed-point text, never scientific notation (``1E+2`` is a valid Decimal, not a price)."""
    return format(value, "f")


def full_scale(value: Decimal) -> Decimal:
    """``value`` as the server's 96-bit decimal would hold it: 29 or 28 significant digits.

    Rounds to the most significant digits whose mantissa still fits below 2**96, with at most
    28 fractional digits, which is what the server prints for an unrounded computation.
    """
    if not value.is_finite() or value == 0:
        return value
    for digits in (29, 28):
        rounded = Context(prec=digits, rounding=ROUND_HALF_EVEN).plus(value)
        exponent = rounded.as_tuple().exponent
        assert isinstance(exponent, int)  # finite values have an integer exponent
        if exponent < -_MAX_SCALE:
            rounded = rounded.quantize(Decimal(1).scaleb(-_MAX_SCALE), context=_WIDE)
        if _mantissa(rounded) < _MAX_MANTISSA:
            return rounded
    return rounded


def _mantissa(value: Decimal) -> int:
    """The integer of all the digits (``12.345`` -> 12345), exact at any precision."""
    return int("".join(str(digit) for digit in value.as_tuple().digits))


def wide() -> Context:
    """A context wide enough that sums and products of wire values are exact."""
    return _WIDE
