"""The feedback a student receives: one HTML file per submission.

What it shows: the score per test, what was repaired, and the student's own notebook
as it ran, with the *visible* tests and their messages. What it never shows: hidden
test source, hidden test output, or a traceback through hidden tests: the hidden
cells are replaced by one line ("hidden tests: passed/failed"), the grader's own
cells are dropped, and as a last safety net every line of hidden test code is
redacted from the final HTML wherever it appears (e.g. if student code printed it).
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from . import assignment as asg

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _summary_md(a: asg.Assignment, result: dict) -> str:
    score = result.get("score")
    head = f"# Feedback: {a.name}\n\n"
    if result["status"] == "ungradable":
        head += (f"**Your submission could not be graded automatically.** Reason: {result['problem']}\n\n"
                 "Your instructor has been told and will look at it.\n\n")
    else:
        head += f"**Score: {score:g} / {a.max_score:g}**\n\n"
        if result["status"] == "incomplete":
            head += f"Grading stopped early: {result['problem']}. Your instructor will review it.\n\n"
    head += "| test | points | result |\n| --- | --- | --- |\n"
    for gid, t in result["tests"].items():
        got = "-" if t["score"] is None else f"{t['score']:g}"
        why = "passed" if t["passed"] else (t["reason"] or "failed")
        head += f"| `{gid}` | {got} / {t['points']:g} | {_md_escape(why)} |\n"
    if result.get("notes"):
        head += "\n**Notes**\n\n" + "".join(f"- {_md_escape(n)}\n" for n in result["notes"])
    return head


def _md_escape(s: str) -> str:
    s = ANSI.sub("", str(s)).replace("\n", " ").replace("|", "\\|")
    return s[:400]


def student_view(a: asg.Assignment, result: dict, executed: dict | None) -> dict:
    cells = [{"cell_type": "markdown", "id": "fb-summary", "metadata": {}, "source": _summary_md(a, result)}]
    if executed is not None:
        for cell in executed["cells"]:
            g = cell.get("metadata", {}).get("grader", {})
            role = g.get("role")
            if role in ("guard", "check", "scrub"):
                continue
            if role == "hidden":
                t = result["tests"].get(g.get("grade_id"), {})
                ok = t.get("passed") or not t.get("hidden_failed")
                text = "passed" if t.get("passed") else ("failed" if t.get("hidden_failed") else "not run")
                cells.append({"cell_type": "markdown", "id": f"fb-{len(cells)}", "metadata": {},
                              "source": f"*Hidden tests for `{g.get('grade_id')}`: **{text}**"
                                        f"{'' if ok else ' (details are not shown)'}.*"})
                continue
            c = json.loads(json.dumps(cell))
            c["metadata"] = {}
            c["id"] = f"fb-{len(cells)}"
            cells.append(c)
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}, "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    return nb


def redact(text: str, a: asg.Assignment) -> str:
    """Remove every line of hidden test code from ``text`` (plain and HTML-escaped forms)."""
    for line in sorted(set(a.hidden_lines()), key=len, reverse=True):
        for form in {line, html.escape(line), html.escape(line, quote=False)}:
            if form and form in text:
                text = text.replace(form, "[hidden]")
    return text


def write(a: asg.Assignment, result: dict, executed: dict | None, path: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.from_dict(student_view(a, result, executed))
    exporter = HTMLExporter(template_name="classic")
    exporter.exclude_input_prompt = False
    body, _ = exporter.from_notebook_node(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redact(body, a), encoding="utf-8")
    return path


def write_plain(a: asg.Assignment, result: dict, path: Path, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = html.escape(_summary_md(a, result) + "\n" + extra)
    path.write_text(redact(f"<html><body><pre>{text}</pre></body></html>", a), encoding="utf-8")
    return path
