"""Functions the rest of the course calls (tests, reports)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from . import assignment as asg
from .autograde import grade_submission
from .runner import Limits


def grade_notebook(name: str, notebook: str | Path, limits: Limits | None = None, slot: int = 0,
                   feedback: bool = False) -> dict:
    """Autograde one notebook file as a submission of assignment ``name``; returns the result dict
    (score, max_score, status, tests, flags, notes, problem, seconds)."""
    a = asg.load(name)
    with tempfile.TemporaryDirectory(prefix="grading-one-") as tmp:
        folder = Path(tmp) / "submission"
        folder.mkdir()
        shutil.copy2(notebook, folder / f"{name}.ipynb")
        return grade_submission(a, folder, "reference", Path(tmp) / "out", limits or Limits(), slot,
                                feedback_dir=Path(tmp) / "feedback" if feedback else None)


def grade_reference(name: str, limits: Limits | None = None) -> tuple[float, float, float]:
    """Autograde the assignment's reference solution (solutions/<name>/<name>.ipynb) as a student
    submission, sandboxed and in fast mode. Returns (score, max_score, seconds)."""
    r = grade_notebook(name, asg.ROOT / "solutions" / name / f"{name}.ipynb", limits)
    return (r["score"] if r["score"] is not None else float("nan"), r["max_score"], r["seconds"])
