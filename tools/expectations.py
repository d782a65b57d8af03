"""Recorded results that a notebook must produce, read from tests/expected/<name>.json.

Format: {"smoke": {...}, "default": {...}}; each entry is ``name: [low, high]`` (an
inclusive numeric range) or ``name: value`` (exact). Used by the notebook tests (smoke)
and by ``make course`` (default).
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "expected"


def load(name: str) -> dict:
    path = EXPECTED / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path.relative_to(ROOT)} is missing: every notebook declares the results it records")
    return json.loads(path.read_text(encoding="utf-8"))


def check(records: dict, expected: dict, require_all: bool = True) -> list[str]:
    """Problems (empty list when the records meet the expectations)."""
    problems = []
    for key, want in expected.items():
        if key not in records:
            if require_all:
                problems.append(f"{key}: not recorded")
            continue
        got = records[key]
        if isinstance(want, list) and len(want) == 2 and all(isinstance(v, (int, float)) for v in want):
            if not isinstance(got, (int, float)) or not (want[0] <= got <= want[1]):
                problems.append(f"{key} = {got!r}, expected within [{want[0]}, {want[1]}]")
        elif isinstance(want, float) and isinstance(got, (int, float)):
            if abs(got - want) > 1e-6 * max(1.0, abs(want)):
                problems.append(f"{key} = {got!r}, expected {want!r}")
        elif got != want:
            problems.append(f"{key} = {got!r}, expected {want!r}")
    return problems
