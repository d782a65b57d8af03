"""What the LLM benchmarks share: a mean with its 95% bootstrap interval, stored and printed one way."""
from __future__ import annotations

import numpy as np


def ci(x, n_boot: int = 2000) -> list[float]:
    """``[mean, low, high]`` of a per-user (or per-request) metric, rounded for the JSON results."""
    from course_lib.metrics import bootstrap_ci
    m, lo, hi = bootstrap_ci(np.asarray(x, dtype=float), n_boot=n_boot)
    return [round(m, 4), round(lo, 4), round(hi, 4)]


def fmt(c) -> str:
    """``0.123 [0.100, 0.150]`` for a table cell."""
    return f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]"
