"""What a fetched profile says about one id, and what a sample says about the whole load.

Pure functions and data: no I/O. ``compare`` puts a profile next to the
values the export should have produced; ``classify`` turns that into one
``CheckOutcome``; ``landed_estimate`` turns the outcomes of a sample into a
share of the whole load with a 95% confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "KEPT",
    "CheckOutcome",
    "Estimate",
    "Mismatch",
    "classify",
    "compare",
    "landed_estimate",
]


class CheckOutcome(StrEnum):
    """Where one checked id ended (stored by value in the journal)."""

    EXACT = "exact"  # every sent attribute holds the expected value
    WRONG = "wrong"  # the profile exists, some attribute differs or is absent
    MISSING = "missing"  # no profile for the id (HTTP 404)
    NOT_FOUND = "not_found"  # v1 only: 404 for an id v1 does not create; not a mismatch
    NOT_YET_APPLIED = "not_yet_applied"  # differs, but its batch completed too recently
    FETCH_ERROR = "fetch_error"  # the fetch failed after retries


# Outcomes a rerun keeps. Every other id is checked again: never checked, not
# landed (it may have been re-sent since), not yet applied, or a fetch error.
KEPT = frozenset({CheckOutcome.EXACT, CheckOutcome.NOT_FOUND})


@dataclass(frozen=True)
class Mismatch:
    """One attribute that does not hold what the export should have produced."""

    attribute: str
    expected: str
    found: str | None  # None: the attribute (or the whole profile) is absent
    modified_at: str | None  # when Target last changed it (the profile's, if absent)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def compare(expected: Mapping[str, str], profile: Mapping[str, Any] | None) -> list[Mismatch]:
    """Every expected attribute that the profile does not hold, in name order.

    Attributes the profile has beyond the expected ones are not ours to judge
    (other systems write profiles too). A missing profile misses every value.
    """
    if profile is None:
        return [Mismatch(name, expected[name], None, None) for name in sorted(expected)]
    stored = profile.get("profileAttributes") or {}
    when = profile.get("modifiedAt")
    out = []
    for name in sorted(expected):
        attr = stored.get(name)
        if isinstance(attr, Mapping) and "value" in attr:
            found: str | None = _text(attr["value"])
            stamp = attr.get("modifiedAt", when)
        else:
            found, stamp = None, when
        if found != expected[name]:
            out.append(Mismatch(name, expected[name], found, None if stamp is None else str(stamp)))
    return out


def classify(
    mismatches: list[Mismatch], *, profile_found: bool, api: str, settled: bool
) -> CheckOutcome:
    """One outcome for one id.

    ``settled``: the id's last batch completed long enough ago that Target
    should have applied it; before that a difference is "not yet applied".
    """
    if not mismatches:
        return CheckOutcome.EXACT
    if not profile_found and api == "v1":
        return CheckOutcome.NOT_FOUND
    if not settled:
        return CheckOutcome.NOT_YET_APPLIED
    return CheckOutcome.WRONG if profile_found else CheckOutcome.MISSING


@dataclass(frozen=True)
class Estimate:
    """Share of the load that landed exactly, with its 95% confidence interval."""

    share: float
    low: float
    high: float
    profiles: int  # share x population, rounded
    population: int


_Z95 = 1.959963984540054


def landed_estimate(exact: int, settled: int, population: int) -> Estimate | None:
    """Wilson score interval for ``exact`` of ``settled`` checks, from ``population`` ids.

    A sample drawn without replacement from a finite load varies less than
    one drawn with replacement: the finite population correction enters as a
    larger effective sample size, and a sample of the whole load has no
    uncertainty left. None when nothing was settled.
    """
    if settled <= 0 or population <= 0:
        return None
    p = exact / settled
    if settled >= population:
        return Estimate(p, p, p, round(p * population), population)
    n = settled * (population - 1) / (population - settled)
    z2 = _Z95 * _Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return Estimate(p, low, high, round(p * population), population)
