"""Which notebook of a folder is graded, where `collect --from` puts it, and the canary that
stops a class from being graded in a broken environment."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
from grading import assignment as asg  # noqa: E402
from grading import course as crs  # noqa: E402
from grading.autograde import CanaryFailed, find_notebook, grade_many  # noqa: E402
from grading.runner import Limits  # noqa: E402

NAME = corpus.NAME


def _put(path: Path, nb: dict, age_s: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    t = path.stat().st_mtime - age_s
    os.utime(path, (t, t))


def test_the_notebook_with_the_work_is_graded(tmp_path):
    a = asg.load(NAME)
    work = corpus.with_answer(corpus.GOOD)
    # the work is *older* than the untouched release: still the one graded
    _put(tmp_path / f"{NAME}.ipynb", corpus._load("release"), 0)
    _put(tmp_path / f"{NAME}-Copy1.ipynb", work, 600)
    nb, notes, flags = find_notebook(tmp_path, NAME, a)
    assert nb.name == f"{NAME}-Copy1.ipynb" and not flags
    assert any("the only one with answers that differ" in n for n in notes), notes


def test_two_notebooks_with_work_newest_and_flagged(tmp_path):
    a = asg.load(NAME)
    _put(tmp_path / f"{NAME}.ipynb", corpus.with_answer(corpus.WRONG_MEAN), 600)
    _put(tmp_path / "mine.ipynb", corpus.with_answer(corpus.GOOD), 0)
    nb, notes, flags = find_notebook(tmp_path, NAME, a)
    assert nb.name == "mine.ipynb"
    assert flags and "2 notebooks hold work" in flags[0]


def test_no_work_anywhere_prefers_the_assignment_name(tmp_path):
    a = asg.load(NAME)
    _put(tmp_path / f"{NAME}.ipynb", corpus._load("release"), 600)
    _put(tmp_path / "copy.ipynb", corpus._load("release"), 0)
    nb, notes, flags = find_notebook(tmp_path, NAME, a)
    assert nb.name == f"{NAME}.ipynb" and not flags and notes


def test_collect_flat_and_nbgrader_layouts_land_in_the_same_place(tmp_path):
    src = tmp_path / "from"
    _put(src / "alice" / NAME / f"{NAME}.ipynb", corpus._load("release"), 0)     # nbgrader's layout
    (src / "alice" / NAME / "notes.txt").write_text("mine")
    _put(src / "bob" / f"{NAME}.ipynb", corpus._load("release"), 0)              # a folder per student
    _put(src / "carol.ipynb", corpus._load("release"), 0)                         # a file per student
    course = tmp_path / "course"
    students = crs.collect_folder(NAME, src, course)
    assert students == ["alice", "bob", "carol"]
    for s in students:
        assert (course / "submitted" / s / NAME / f"{NAME}.ipynb").is_file(), s
        assert not (course / "submitted" / s / NAME / NAME).exists(), "the assignment folder nested twice"
    assert (course / "submitted" / "alice" / NAME / "notes.txt").read_text() == "mine"


SMALL = Limits(wall_s=120, cell_s=30, memory_mb=3072, nproc=128, file_mb=64, tmp_mb=128, output_kb=64)


def test_canary_stops_grading_in_a_broken_environment(tmp_path, monkeypatch):
    """The data folder the kernel sees is empty (as when the environment sits in a folder the
    sandbox covers): the reference solution cannot get full marks, so nothing is graded and the
    message says why and how to fix it."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("COURSE_DATA_DIR", str(empty))
    folder = tmp_path / "submitted" / "s1" / NAME
    _put(folder / f"{NAME}.ipynb", corpus._load("solution"), 0)
    with pytest.raises(CanaryFailed) as info:
        grade_many(NAME, [("s1", folder, tmp_path / "out" / "s1", tmp_path / "fb" / "s1")], SMALL, workers=1)
    msg = str(info.value)
    assert "reference solution" in msg and "How to fix" in msg and "COURSE_DATA_DIR" in msg
    assert "a cell failed" in msg or "test " in msg
    assert not (tmp_path / "out" / "s1" / "result.json").exists(), "nothing graded"
    # graded anyway (no canary), the same failure is the grader's, not the student's: flagged
    r = grade_many(NAME, [("s1", folder, tmp_path / "out" / "s1", None)], SMALL, workers=1,
                   check_reference=False)[0]
    assert r["needs_review"] and any(f.startswith("environment:") and "not the student" in f for f in r["flags"]), r
