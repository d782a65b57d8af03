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

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """``text`` without its ANSI escape sequences (the colours of IPython's tracebacks)."""
    return _ANSI.sub("", text)

# The page is inert: no script runs, nothing is fetched (images are data: URIs), whatever the
# submission displayed. Browsers apply a CSP given in a <meta> tag to the whole page.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
       "script-src 'none'; object-src 'none'; frame-src 'none'; form-action 'none'; base-uri 'none'")
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
SAFE_TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "div", "dl", "dt",
             "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "s", "small",
             "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul"}
KEEP_DATA = ("text/plain", "image/png", "image/jpeg", "image/gif", "text/html", "text/latex")
_BLOCKS = re.compile(r"<(script|style|iframe|object|embed|template|svg|math|noscript)\b.*?</\1\s*>",
                     re.IGNORECASE | re.DOTALL)


def _safe_attr(tag: str, name: str, value: str) -> bool:
    if name in ("class", "title", "colspan", "rowspan", "align", "alt"):
        return True
    if tag == "img" and name in ("src", "width", "height"):
        return name != "src" or re.match(r"data:image/(png|jpeg|gif);base64,[A-Za-z0-9+/=\s]*$", value) is not None
    return False


def sanitize_html(text: str) -> str:
    """What a submission's rich output may show: tables, text, data-URI images; no script, no
    event handler, no iframe, no style, no link that leaves the page."""
    import bleach

    text = _BLOCKS.sub("", text)
    return bleach.clean(text, tags=SAFE_TAGS, attributes=_safe_attr, protocols=["data"], strip=True,
                        strip_comments=True)


def sanitize_outputs(cell: dict) -> dict:
    """Rich outputs reduced to inert ones (plots stay as PNG/JPEG; HTML sanitized; JavaScript,
    SVG, widgets, markdown and any other type dropped, the plain-text version kept)."""
    for out in cell.get("outputs", []) or []:
        data = out.get("data")
        if not isinstance(data, dict):
            continue
        kept = {k: v for k, v in data.items() if k in KEEP_DATA}
        if "text/html" in kept:
            html_text = "".join(kept["text/html"]) if isinstance(kept["text/html"], list) else str(kept["text/html"])
            kept["text/html"] = sanitize_html(html_text)
        if not kept:
            kept = {"text/plain": f"[output of type {', '.join(sorted(data))[:80]} not shown in the feedback]"}
        out["data"] = kept
        out["metadata"] = {}
    return cell


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
    s = strip_ansi(str(s)).replace("\n", " ").replace("|", "\\|")
    return s[:400]


def student_view(a: asg.Assignment, result: dict, executed: dict | None) -> dict:
    cells = [{"cell_type": "markdown", "id": "fb-summary", "metadata": {}, "source": _summary_md(a, result)}]
    with_hidden = {t.grade_id for t in a.tests if t.hidden.strip()}
    if executed is not None:
        for cell in executed["cells"]:
            g = cell.get("metadata", {}).get("grader", {})
            role = g.get("role")
            if role in ("guard", "check", "scrub"):
                continue
            if role == "hidden":  # never in a feedback run; kept for notebooks graded before
                continue
            c = json.loads(json.dumps(cell))
            c["metadata"] = {}
            c["id"] = f"fb-{len(cells)}"
            c.pop("attachments", None)
            if c.get("cell_type") == "code":
                sanitize_outputs(c)
            elif c.get("cell_type") == "markdown":  # the student's own markdown: its raw HTML made inert
                c["source"] = sanitize_html(c["source"] if isinstance(c["source"], str) else "".join(c["source"]))
            else:  # raw cells are shown as text
                c = {"cell_type": "markdown", "id": c["id"], "metadata": {},
                     "source": "```\n" + (c["source"] if isinstance(c["source"], str) else "".join(c["source"])) + "\n```"}
            cells.append(c)
            if role == "visible" and g.get("grade_id") in with_hidden:
                t = result["tests"].get(g.get("grade_id"), {})
                text = "passed" if t.get("passed") else ("failed" if t.get("hidden_failed") else "not run")
                cells.append({"cell_type": "markdown", "id": f"fb-{len(cells)}", "metadata": {},
                              "source": f"*Hidden tests for `{g.get('grade_id')}`: **{text}**"
                                        f"{' (details are not shown)' if text == 'failed' else ''}.*"})
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


def inert(page: str) -> str:
    """The Content-Security-Policy first thing in <head>, and the template's own scripts removed."""
    page = re.sub(r"<script\b.*?</script\s*>", "", page, flags=re.IGNORECASE | re.DOTALL)
    page = re.sub(r"<link\b[^>]*>", "", page, flags=re.IGNORECASE)
    m = re.search(r"<head[^>]*>", page, flags=re.IGNORECASE)
    if m:
        return page[:m.end()] + "\n" + CSP_META + page[m.end():]
    return CSP_META + page


def write(a: asg.Assignment, result: dict, executed: dict | None, path: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.from_dict(student_view(a, result, executed))
    exporter = HTMLExporter(template_name="classic")
    exporter.exclude_input_prompt = False
    body, _ = exporter.from_notebook_node(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(inert(redact(body, a)), encoding="utf-8")
    return path


def write_plain(a: asg.Assignment, result: dict, path: Path, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = html.escape(_summary_md(a, result) + "\n" + extra)
    path.write_text(inert(redact(f"<html><head></head><body><pre>{text}</pre></body></html>", a)), encoding="utf-8")
    return path
