"""Summaries of repeated measurements: median with min and max, percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    """The median of several runs, with the smallest and largest run."""

    median: float
    min: float
    max: float
    runs: int
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        clean = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not clean:
            raise ValueError("no values to summarise")
        return cls(
            median=statistics.median(clean),
            min=min(clean),
            max=max(clean),
            runs=len(clean),
            values=tuple(clean),
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "runs": self.runs,
            "values": list(self.values),
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between ranks,
    the same definition as numpy's default."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
