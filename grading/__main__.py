"""The instructor's grading command: one step per command, or all of them.

    python -m grading setup     ASSIGNMENT                  # gradebook + data (once per assignment)
    python -m grading collect   ASSIGNMENT --from FOLDER    # a folder per student (or <student>.ipynb files)
    python -m grading collect   ASSIGNMENT --zip EXPORT.zip # an LMS export (nbgrader zip_collect)
    python -m grading autograde ASSIGNMENT [--workers N]    # the whole class, sandboxed, in parallel
    python -m grading feedback  ASSIGNMENT                  # HTML feedback per student (again)
    python -m grading export    ASSIGNMENT                  # grade sheet CSV
    python -m grading report    ASSIGNMENT                  # class report (markdown + plot)
    python -m grading all       ASSIGNMENT --from FOLDER    # everything above
    python -m grading list                                  # the assignments it knows

Every command takes ``--course DIR`` (default grading/course, or $COURSE_GRADING_DIR).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import assignment as asg
from . import course as crs
from .runner import Limits


def _limits(args) -> Limits:
    lim = Limits()
    for k in ("wall_s", "cell_s", "memory_mb"):
        v = getattr(args, k, None)
        if v:
            setattr(lim, k, type(getattr(lim, k))(v))
    return lim


def cmd_autograde(args) -> int:
    from .autograde import grade_many

    name, course = args.assignment, Path(args.course)
    if not (course / "gradebook.db").exists():
        crs.setup(name, course)
    students = args.student or crs.submitted_students(name, course)
    if not students:
        print(f"no submissions for {name} in {course / 'submitted'}: run `python -m grading collect` first")
        return 1
    jobs = [(s, course / "submitted" / s / name, course / "autograded" / s / name, course / "feedback" / s / name)
            for s in students]
    t0 = time.monotonic()
    done = [0]

    def progress(r):
        done[0] += 1
        sc = "-" if r.get("score") is None else f"{r['score']:g}/{r['max_score']:g}"
        extra = r.get("problem") or ("; ".join(r.get("flags", []))[:120])
        print(f"[{done[0]}/{len(jobs)}] {r['student']}: {r['status']} {sc} {extra}", flush=True)

    from .autograde import CanaryFailed

    print(f"grading the reference solution of {name} first (it must get full marks) ...", flush=True)
    try:
        rows = grade_many(name, jobs, _limits(args), args.workers, progress=progress)
    except CanaryFailed as exc:
        print(f"STOPPED: {exc}", file=sys.stderr)
        return 3
    crs.sync_gradebook(name, rows, course)
    print(f"graded {len(rows)} submissions in {time.monotonic() - t0:.0f} s")
    return 0


def cmd_feedback(args) -> int:
    from . import feedback

    name, course = args.assignment, Path(args.course)
    a = asg.load(name)
    n = 0
    for r in crs.results(name, course):
        nb_file = course / "autograded" / r["student"] / name / f"{name}.ipynb"
        executed = json.loads(nb_file.read_text(encoding="utf-8")) if nb_file.exists() else None
        out = course / "feedback" / r["student"] / name / f"{name}.html"
        if r["status"] == "not graded":
            feedback.write_plain(a, r, out)
        else:
            feedback.write(a, r, executed, out)
        n += 1
    print(f"wrote {n} feedback files under {course / 'feedback'}")
    return 0


def cmd_export(args) -> int:
    from .report import grade_sheet

    name, course = args.assignment, Path(args.course)
    path = grade_sheet(asg.load(name), crs.results(name, course), course / "reports" / name / "grades.csv")
    print(f"wrote {path}")
    return 0


def cmd_report(args) -> int:
    from .report import class_report

    name, course = args.assignment, Path(args.course)
    path = class_report(asg.load(name), crs.results(name, course), course / "reports" / name)
    print(f"wrote {path}")
    return 0


def cmd_collect(args) -> int:
    name, course = args.assignment, Path(args.course)
    if args.zip:
        students = crs.collect_zip(name, Path(args.zip), course, args.regex or crs.DEFAULT_REGEX)
    elif args.from_:
        students = crs.collect_folder(name, Path(args.from_), course)
    else:
        print("give --from FOLDER or --zip EXPORT.zip")
        return 2
    print(f"collected {len(students)} submissions into {course / 'submitted'}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grading", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for c in ("setup", "collect", "autograde", "feedback", "export", "report", "all"):
        p = sub.add_parser(c)
        p.add_argument("assignment")
        p.add_argument("--course", default=str(crs.DEFAULT_COURSE))
        if c in ("collect", "all"):
            p.add_argument("--from", dest="from_")
            p.add_argument("--zip")
            p.add_argument("--regex", help="file-name pattern of the LMS export (nbgrader FileNameCollectorPlugin)")
        if c in ("autograde", "all"):
            p.add_argument("--workers", type=int, default=None)
            p.add_argument("--student", action="append", help="grade only this student (repeatable)")
            p.add_argument("--wall-s", dest="wall_s", type=float)
            p.add_argument("--cell-s", dest="cell_s", type=float)
            p.add_argument("--memory-mb", dest="memory_mb", type=int)
    sub.add_parser("list")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        print("\n".join(asg.discover()))
        return 0
    if args.assignment not in asg.discover():
        print(f"unknown assignment {args.assignment!r}; known: {', '.join(asg.discover())}")
        return 2
    if args.cmd == "setup":
        print(f"gradebook: {crs.setup(args.assignment, Path(args.course))}")
        return 0
    if args.cmd == "all":
        if args.from_ or args.zip:
            rc = cmd_collect(args)
            if rc:
                return rc
        rc = cmd_autograde(args)
        if rc:
            return rc
        return cmd_export(args) or cmd_report(args)
    return {"collect": cmd_collect, "autograde": cmd_autograde, "feedback": cmd_feedback,
            "export": cmd_export, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
