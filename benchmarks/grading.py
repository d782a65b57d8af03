"""Throughput of the autograder: a class of N submissions of the largest notebook.

    python benchmarks/grading.py [--n 40] [--workers 2] [--assignment NAME]

The largest notebook is the assignment with the most code cells (ties: the biggest file).
Submissions are copies of its reference solution with a distinct comment each, graded
sandboxed in fast mode (COURSE_FAST=1) with the default limits, in parallel. Prints a
markdown table and writes benchmarks/results/grading.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grading import assignment as asg  # noqa: E402
from grading.autograde import default_workers, grade_many  # noqa: E402
from grading.runner import Limits, support  # noqa: E402


def largest() -> str:
    def size(n):
        nb = json.loads((ROOT / "solutions" / n / f"{n}.ipynb").read_text())
        return (sum(c["cell_type"] == "code" for c in nb["cells"]), len(json.dumps(nb)))
    return max(asg.discover(), key=size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--assignment", default=None)
    args = ap.parse_args(argv)
    name = args.assignment or largest()
    workers = args.workers or default_workers()
    src = json.loads((ROOT / "solutions" / name / f"{name}.ipynb").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = []
        for i in range(args.n):
            nb = json.loads(json.dumps(src))
            nb["cells"].append({"cell_type": "code", "execution_count": None, "id": f"x{i}", "metadata": {},
                                "outputs": [], "source": f"# student {i}"})
            folder = tmp / "submitted" / f"s{i:03d}" / name
            folder.mkdir(parents=True)
            (folder / f"{name}.ipynb").write_text(json.dumps(nb))
            jobs.append((f"s{i:03d}", folder, tmp / "autograded" / f"s{i:03d}", tmp / "feedback" / f"s{i:03d}"))
        load0, t0 = os.getloadavg()[0], time.monotonic()
        rows = grade_many(name, jobs, Limits(), workers)
        wall, load1 = time.monotonic() - t0, os.getloadavg()[0]
    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    # the CPU seconds bound the wall time on otherwise idle cores: cpu / workers
    full = sum(r["score"] == r["max_score"] for r in rows)
    per = sorted(r["seconds"] for r in rows)
    table = "\n".join([
        "| assignment | submissions | workers | full marks | wall time (min) | per submission, median (s) | per submission, max (s) | CPU time (min) | CPU time / workers (min) | load average, start / end | sandbox | machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {name} | {len(rows)} | {workers} | {full}/{len(rows)} | {wall / 60:.1f} | {per[len(per) // 2]:.1f} | "
        f"{per[-1]:.1f} | {cpu / 60:.1f} | {cpu / 60 / workers:.1f} | {load0:.1f} / {load1:.1f} | {support()[1]} | "
        f"{os.cpu_count()} cores, {platform.machine()} |"])
    print(table)
    out = ROOT / "benchmarks" / "results" / "grading.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    note = ("Each submission is run twice: the feedback run (Jupyter kernel, visible tests only) and the "
            "grading run that decides the points (a fresh sandboxed process, all tests); the wall time "
            "includes grading the reference solution first (the canary). Target: 40 submissions of the "
            "largest notebook in <= 10 min on 2 cores.")
    cmd = " ".join(["python benchmarks/grading.py", *(argv if argv is not None else sys.argv[1:])])
    out.write_text("# Autograder throughput\n\n`%s`\n\n%s\n\n%s\n" % (cmd, table, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
