"""`make course`: run every notebook on the default data, autograde the reference solutions,
and write a report (run time, peak memory, recorded results, grade) to reports/.

    python -m tools.course_report                 # default mode (full data)
    python -m tools.course_report --smoke         # also SMOKE mode, for the timing table
    python -m tools.course_report --only 01_interaction_matrix
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tools import expectations, nbrun

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"


def _dir_size_mb(path: Path) -> float:
    try:
        out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout
        return float(out.split()[0])
    except (subprocess.CalledProcessError, FileNotFoundError, IndexError, ValueError):
        return float("nan")


def _grade(name: str) -> dict:
    """Autograde the reference solution as if a student had submitted it."""
    try:
        from grading.api import grade_reference
    except ImportError as exc:
        return {"error": f"grading.api unavailable: {exc}"}
    try:
        score, max_score, seconds = grade_reference(name)
    except Exception as exc:  # report, never stop the course run
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"score": score, "max_score": max_score, "seconds": round(seconds, 1)}


def _fmt_records(rec: dict, limit: int = 6) -> str:
    items = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(rec.items())[:limit]]
    more = len(rec) - limit
    return ", ".join(items) + (f", +{more} more" if more > 0 else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="also run every notebook in SMOKE mode")
    ap.add_argument("--only", nargs="*", help="notebook names (default: all)")
    ap.add_argument("--no-grade", action="store_true", help="skip autograding the reference solutions")
    args = ap.parse_args(argv)

    notebooks = sorted(ROOT.glob("solutions/*/*.ipynb"))
    if args.only:
        notebooks = [p for p in notebooks if p.parent.name in set(args.only)]
    if not notebooks:
        print("no notebooks to run", file=sys.stderr)
        return 1
    REPORTS.mkdir(exist_ok=True)
    rows, failures = [], 0
    t_start = time.perf_counter()
    modes = [("default", False)] + ([("smoke", True)] if args.smoke else [])
    for path in notebooks:
        name = path.parent.name
        row = {"notebook": name}
        exp = expectations.load(name)
        for mode, fast in modes:
            print(f"[{mode:7}] {name} ...", flush=True)
            params = {"SMOKE": True} if fast else {"SMOKE": False}
            res = nbrun.run(path, REPORTS / "executed" / mode / f"{name}.ipynb", params, fast=fast)
            problems = [] if res.ok else [res.error.strip().splitlines()[-1] if res.error.strip() else "failed"]
            if res.ok:
                problems = expectations.check(res.records, exp.get(mode, {}))
            failures += bool(problems)
            row[mode] = {"ok": res.ok and not problems, "seconds": res.seconds, "peak_mb": res.peak_mb,
                         "records": res.records, "problems": problems}
            print(f"          {res.seconds:7.1f} s  {res.peak_mb:7.0f} MB  {'ok' if not problems else problems}", flush=True)
        if not args.no_grade:
            row["grade"] = _grade(name)
            g = row["grade"]
            failures += "error" in g or g.get("score") != g.get("max_score")
            print(f"          grade: {g}", flush=True)
        rows.append(row)

    total = time.perf_counter() - t_start
    import torch
    env = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
           "venv_mb": _dir_size_mb(ROOT / ".venv"), "total_seconds": round(total, 1)}
    (REPORTS / "course_report.json").write_text(json.dumps({"environment": env, "notebooks": rows}, indent=1))

    lines = ["# Course report", "",
             f"Python {env['python']}, torch {env['torch']} on {env['machine']}; environment "
             f"{env['venv_mb']:.0f} MB; total {total / 60:.1f} min.", ""]
    head = "| notebook | " + " | ".join(f"{m} s | {m} peak MB | {m} ok" for m, _ in modes) + " | grade | recorded (default) |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = []
        for m, _ in modes:
            d = r[m]
            cells += [f"{d['seconds']:.1f}", f"{d['peak_mb']:.0f}", "yes" if d["ok"] else "NO: " + "; ".join(d["problems"])[:120]]
        g = r.get("grade", {})
        grade = "-" if not g else (g["error"][:80] if "error" in g else f"{g['score']:g}/{g['max_score']:g}")
        lines.append(f"| {r['notebook']} | " + " | ".join(cells) + f" | {grade} | {_fmt_records(r['default']['records'])} |")
    (REPORTS / "course_report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {REPORTS / 'course_report.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
