"""Kubernetes resource quantities ("500m", "256Mi", "1.5Gi") as comparable numbers.

Validation needs to compare a memory limit with its request before anything reaches the API
server, so the parsing follows the Kubernetes quantity grammar for the suffixes we accept.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10**3), "M": Decimal(10**6),
            "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15)}
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>[KMGTP]i|[mkMGTP]?)$")


def parse_quantity(text: str) -> Decimal:
    """The value of a Kubernetes quantity, in base units (cores or bytes)."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 256Mi, 1Gi)")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as error:  # pragma: no cover - the regex only admits decimals
        raise ValueError(f"{text!r} is not a number") from error
    suffix = match["suffix"]
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    return number * _DECIMAL[suffix]
