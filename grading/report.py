"""The grade sheet (CSV) and the class report (markdown + a plot)."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from . import assignment as asg
from .autograde import needs_review
from .feedback import strip_ansi


def grade_sheet(a: asg.Assignment, rows: list[dict], path: Path) -> Path:
    """One row per submission: total, each test, status and the reason when not fully graded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tests = [t.grade_id for t in a.tests]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "assignment", "score", "max_score", "status", *tests, "needs_review", "reason",
                    "notebook", "notes"])
        for r in sorted(rows, key=lambda r: r["student"]):
            per = [("" if r.get("tests", {}).get(g, {}).get("score") is None else r["tests"][g]["score"]) for g in tests]
            review = needs_review(r)
            reason = r.get("problem") or "; ".join(r.get("flags", []))
            w.writerow([r["student"], a.name, "" if r.get("score") is None else r["score"], a.max_score,
                        r["status"], *per, "yes" if review else "no", reason, r.get("notebook", ""),
                        "; ".join(r.get("notes", []))])
    return path


def _reason_key(reason: str) -> str:
    reason = strip_ansi(reason).strip()
    return reason.splitlines()[0][:160] if reason else "failed"


def class_report(a: asg.Assignment, rows: list[dict], out_dir: Path) -> Path:
    """report.md: summary, per-question distribution, most frequent failures, what needs a look."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    graded = [r for r in rows if r.get("score") is not None]
    scores = sorted(r["score"] for r in graded)
    n = len(rows)
    lines = [f"# Class report: {a.name}", "",
             f"{n} submissions: {sum(r['status'] == 'graded' for r in rows)} graded, "
             f"{sum(r['status'] == 'incomplete' for r in rows)} incomplete (partly graded, need a look), "
             f"{sum(r['status'] not in ('graded', 'incomplete') for r in rows)} could not be graded automatically.", ""]
    if scores:
        mean = sum(scores) / len(scores)
        med = scores[len(scores) // 2] if len(scores) % 2 else (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
        lines += [f"Score out of {a.max_score:g}: mean {mean:.2f}, median {med:g}, min {scores[0]:g}, max {scores[-1]:g}; "
                  f"full marks: {sum(s == a.max_score for s in scores)}.", ""]
    lines += ["## Score distribution per question", "", "| test | points | full marks | zero | not graded | mean |",
              "| --- | --- | --- | --- | --- | --- |"]
    for t in a.tests:
        vals = [r["tests"].get(t.grade_id, {}).get("score") for r in rows]
        got = [v for v in vals if v is not None]
        mean = (sum(got) / len(got)) if got else float("nan")
        lines.append(f"| `{t.grade_id}` | {t.points:g} | {sum(v == t.points for v in got)} | {sum(v == 0 for v in got)} "
                     f"| {len(vals) - len(got)} | {mean:.2f} |")
    fails = Counter()
    for r in graded:
        for gid, t in r["tests"].items():
            if not t.get("passed"):
                fails[(gid, _reason_key(t.get("reason", "")))] += 1
    lines += ["", "## Most frequently failed tests", "", "| test | failure | submissions |", "| --- | --- | --- |"]
    for (gid, why), k in fails.most_common(15):
        lines.append(f"| `{gid}` | {why.replace('|', '/')} | {k} |")
    if not fails:
        lines.append("| - | no failures | 0 |")
    attention = [r for r in rows if r["status"] != "graded"]
    lines += ["", "## Submissions that need a look", "", "| student | status | score | reason |", "| --- | --- | --- | --- |"]
    for r in sorted(attention, key=lambda r: r["student"]):
        sc = "-" if r.get("score") is None else f"{r['score']:g}"
        lines.append(f"| {r['student']} | {r['status']} | {sc} | {str(r.get('problem', '')).replace('|', '/')[:300]} |")
    if not attention:
        lines.append("| - | - | - | every submission was graded |")
    flagged = [r for r in rows if r.get("flags")]
    lines += ["", "## Integrity and tampering flags", "",
              "Scores stand as computed (tests run against restored libraries); review these by hand.", "",
              "| student | flag |", "| --- | --- |"]
    for r in sorted(flagged, key=lambda r: r["student"]):
        for f in r["flags"]:
            lines.append(f"| {r['student']} | {f.replace('|', '/')[:300]} |")
    if not flagged:
        lines.append("| - | none |")
    # the plot
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    if scores:
        axes[0].hist(scores, bins=min(20, max(5, int(a.max_score) + 1)), range=(0, max(a.max_score, 1)), color="tab:blue")
    axes[0].set(title=f"{a.name}: total scores", xlabel=f"score (out of {a.max_score:g})", ylabel="submissions")
    names = [t.grade_id for t in a.tests]
    rates = []
    for t in a.tests:
        got = [r["tests"].get(t.grade_id, {}).get("passed") for r in graded]
        rates.append(100 * sum(bool(x) for x in got) / len(got) if got else 0)
    axes[1].barh(names, rates, color="tab:green")
    axes[1].set(title="Tests passed", xlabel="% of graded submissions", xlim=(0, 100))
    fig.tight_layout()
    fig.savefig(out_dir / "report.png", dpi=110)
    plt.close(fig)
    lines += ["", "![scores](report.png)", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
