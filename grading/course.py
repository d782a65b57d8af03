"""The instructor's grading folder, and the steps that use nbgrader.

A grading folder (default ``grading/course/``, never committed) is an nbgrader course
directory of its own, layered on top of ``grading/nbgrader_config.py``:

    <course>/gradebook.db                         nbgrader's gradebook (cells, points, grades)
    <course>/release/<assignment>/                nbgrader's release (checked against notebooks/)
    <course>/downloaded/<assignment>/archive/     LMS zip exports (nbgrader zip_collect)
    <course>/submitted/<student>/<assignment>/    one folder per student
    <course>/autograded/<student>/<assignment>/   executed notebook + result.json (instructor only)
    <course>/feedback/<student>/<assignment>/     <assignment>.html, for the student
    <course>/reports/<assignment>/                grades.csv, report.md, report.png
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

from . import assignment as asg
from .autograde import needs_review
from .nbgrader_cli import run_nbgrader

ROOT = asg.ROOT
GRADING = ROOT / "grading"
DEFAULT_COURSE = Path(os.environ.get("COURSE_GRADING_DIR", GRADING / "course"))
# <anything>_<student>_attempt_<timestamp>_<file>: nbgrader's documented LMS file-name pattern
DEFAULT_REGEX = r".*/[^/]*?_(?P<student_id>[^_/]+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>[^/]+)$"


def nbgrader(args: list[str], course: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run an nbgrader command with the course's config plus this grading folder's paths."""
    proc = run_nbgrader([*args,
                         f"--CourseDirectory.root={course}",
                         f"--CourseDirectory.source_directory={ROOT / 'solutions'}",
                         f"--CourseDirectory.release_directory=release",
                         f"--CourseDirectory.db_url=sqlite:///{course / 'gradebook.db'}"])
    if check and proc.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def setup(name: str, course: Path = DEFAULT_COURSE) -> Path:
    """Register the assignment in the gradebook (cells, points, checksums) and fetch the data
    the notebooks need (the sandbox has no network)."""
    course.mkdir(parents=True, exist_ok=True)
    os.chmod(course, 0o700)  # instructor only
    nbgrader(["generate_assignment", name, "--force", "--quiet"], course)
    try:
        from course_lib import data
        data.fetch("ml-100k", quiet=True)
    except Exception as exc:  # pragma: no cover - reported, grading may still work
        print(f"warning: could not fetch ml-100k for grading: {exc}", file=sys.stderr)
    return course / "gradebook.db"


def safe_id(raw: str) -> str:
    """A student id usable as a folder name: NFC, no path separators or control characters."""
    s = unicodedata.normalize("NFC", raw).strip()
    s = re.sub(r"[/\\\x00-\x1f]", "_", s)
    return s.strip(".") or "unnamed"


def collect_folder(name: str, src: Path, course: Path = DEFAULT_COURSE) -> list[str]:
    """``src/<student>/...`` (a folder per student), nbgrader's ``src/<student>/<assignment>/...``, or
    ``src/<student>.ipynb`` files."""
    students = []
    for p in sorted(src.iterdir()):
        if p.name.startswith("."):
            continue
        sid = safe_id(p.name if p.is_dir() else p.stem)
        dest = course / "submitted" / sid / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        if p.is_dir():
            # nbgrader's own layout FOLDER/<student>/<assignment>/ and the flat FOLDER/<student>/
            # collect to the same place (never <student>/<assignment>/<assignment>/)
            inner = p / name
            shutil.copytree(inner if inner.is_dir() else p, dest, dirs_exist_ok=True, symlinks=True)
        else:
            shutil.copy2(p, dest / (f"{name}.ipynb" if p.suffix == ".ipynb" else p.name))
        students.append(sid)
    return students


def collect_zip(name: str, archive: Path, course: Path = DEFAULT_COURSE, regex: str = DEFAULT_REGEX) -> list[str]:
    """An LMS export: nbgrader's zip_collect (extracts, keeps each student's newest attempt)."""
    if not (course / "gradebook.db").exists():
        setup(name, course)
    arch_dir = course / "downloaded" / name / "archive"
    arch_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(archive, arch_dir / archive.name)
    before = set(submitted_students(name, course))
    proc = nbgrader(["zip_collect", name, "--force", f"--FileNameCollectorPlugin.named_regexp={regex}"], course,
                    check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader zip_collect failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    after = submitted_students(name, course)
    return sorted(set(after) | before)


def submitted_students(name: str, course: Path = DEFAULT_COURSE) -> list[str]:
    root = course / "submitted"
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if (p / name).is_dir())


def results(name: str, course: Path = DEFAULT_COURSE) -> list[dict]:
    out = []
    for sid in submitted_students(name, course):
        f = course / "autograded" / sid / name / "result.json"
        if f.exists():
            out.append(json.loads(f.read_text(encoding="utf-8")))
        else:
            out.append({"student": sid, "assignment": name, "status": "not graded", "score": None,
                        "max_score": None, "tests": {}, "flags": [], "notes": [],
                        "problem": "not autograded yet", "seconds": 0})
    return out


def sync_gradebook(name: str, rows: list[dict], course: Path = DEFAULT_COURSE) -> None:
    """Store the scores in nbgrader's gradebook, so `nbgrader export` and formgrader see them.
    A submission that was not fully graded is marked "needs manual grade" there."""
    import warnings

    from nbgrader.api import Gradebook, MissingEntry

    warnings.filterwarnings("ignore", message=".*not in session.*")  # nbgrader's add_submission
    db = course / "gradebook.db"
    if not db.exists():
        setup(name, course)
    with Gradebook(f"sqlite:///{db}") as gb:
        for r in rows:
            sid = r["student"]
            gb.update_or_create_student(sid)
            try:
                gb.find_submission(name, sid)
            except MissingEntry:
                gb.add_submission(name, sid)
            for gid, t in r.get("tests", {}).items():
                try:
                    g = gb.find_grade(gid, name, name, sid)
                except MissingEntry:
                    continue
                g.auto_score = t.get("score")
                g.needs_manual_grade = needs_review(r)
            gb.db.commit()
