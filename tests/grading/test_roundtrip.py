"""Every assignment round-trips through the autograder (sandboxed, fast mode):
the reference solution scores full marks, the untouched release scores zero on every
exercise (its stubs raise NotImplementedError) with no other error, and no hidden
test line reaches the release."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from grading import assignment as asg  # noqa: E402
from grading.api import grade_notebook  # noqa: E402
from grading.runner import Limits  # noqa: E402

NAMES = asg.discover()
LIMITS = Limits(wall_s=300, cell_s=120)


@pytest.mark.parametrize("name", NAMES)
def test_solution_gets_full_marks(name):
    r = grade_notebook(name, ROOT / "solutions" / name / f"{name}.ipynb", LIMITS)
    assert r["status"] == "graded", r["problem"]
    failed = {k: t["reason"] for k, t in r["tests"].items() if not t["passed"]}
    assert r["score"] == r["max_score"] > 0, failed
    assert not r["cell_errors"], r["cell_errors"]
    bad = ("tampering", "integrity", "verdict", "environment", "resources")
    assert not [f for f in r["flags"] if f.startswith(bad)], r["flags"]


@pytest.mark.parametrize("name", NAMES)
def test_release_scores_zero_without_other_errors(name):
    r = grade_notebook(name, ROOT / "notebooks" / name / f"{name}.ipynb", LIMITS)
    assert r["status"] == "graded", r["problem"]
    assert r["score"] == 0.0
    for gid, t in r["tests"].items():
        assert t["reason"].startswith("NotImplementedError"), (gid, t["reason"])
    assert not r["cell_errors"], r["cell_errors"]


@pytest.mark.parametrize("name", NAMES)
def test_no_hidden_test_in_release(name):
    a = asg.load(name)
    release = a.release_path.read_text(encoding="utf-8")
    assert "BEGIN HIDDEN TESTS" not in release and "BEGIN SOLUTION" not in release
    leaked = [line for line in a.hidden_lines() if line in release]
    assert not leaked, leaked
