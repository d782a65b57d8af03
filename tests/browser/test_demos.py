"""Browser tier: the lecturers' live demos, run in JupyterLab in headless Chromium.

Notebook 03's side-by-side top-10 widget (``classic.build_widget``) and notebook 06's
attention view (``attention.attention_widget``), each checked as a student sees it:
the student release ``notebooks/<nb>/<nb>.ipynb``, copied into the server's temporary
folder, Run All Cells in SMOKE mode (the server's kernels get ``COURSE_FAST=1``, so the
parameters cell's ``SMOKE = cl.fast_mode()`` is True), then a control of the widget is
changed in the browser and what the widget shows must change with it: the text of the
rendered top-10 table, the attention plot's image. Screenshots of the widget before and
after each change, and the browser script's JSON result, go to tests/artifacts/.

The release is run **without its graded exercises**: their answer cells raise
``NotImplementedError`` until a student fills them in, and Run All stops at the first
error. Every other cell runs as released (the notebooks use course_lib's tested
versions after each exercise); the test fails with a clear message if a kept cell ever
uses a name that only an exercise defines.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

ROOT = Path(__file__).resolve().parents[2]
RUN_ALL_S = 150  # bound on Run All Cells of one SMOKE notebook (measured: see the result JSON)


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names bound at any level, names read) in a code cell; IPython magics are skipped."""
    code = "\n".join(ln[: len(ln) - len(ln.lstrip())] + "pass" if ln.lstrip().startswith(("%", "!")) else ln
                     for ln in source.splitlines())
    tree = ast.parse(code)
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    return bound, read


def release_without_exercises(nb_name: str, dest: Path) -> Path:
    """The student release of ``nb_name`` minus its graded cells (answers and their tests),
    written to ``dest`` with no outputs."""
    nb = nbformat.read(ROOT / "notebooks" / nb_name / f"{nb_name}.ipynb", as_version=4)
    kept, dropped = [], []
    for cell in nb.cells:
        grading = cell.get("metadata", {}).get("nbgrader", {})
        (dropped if grading.get("solution") or grading.get("grade") else kept).append(cell)
    assert dropped, f"{nb_name}: no graded cells found; has the release lost its nbgrader metadata?"
    only_in_exercises, used = set(), set()
    for cell in dropped:
        if cell.cell_type == "code":
            only_in_exercises |= _names(cell.source)[0]
    for cell in kept:
        if cell.cell_type == "code":
            bound, read = _names(cell.source)
            only_in_exercises -= bound
            used |= read
            cell.outputs, cell.execution_count = [], None
    needed = sorted(only_in_exercises & used)
    assert not needed, (f"{nb_name}: cells after the exercises use {needed}, defined only by graded cells; "
                        "the demo test runs the release without its exercises (see the module docstring)")
    nb.cells = kept
    nbformat.write(nb, dest)
    return dest


def _rows(table_text: str) -> int:
    """Rows of the rendered side-by-side table: lines that start with a rank."""
    return sum(bool(re.match(r"\d+\t", ln)) for ln in table_text.splitlines())


def _check_run(res: dict) -> None:
    where = f"\nsteps: {res['steps']}\nscreenshots: {res['screenshots']}"
    assert not res["errors"], f"error output in the notebook: {res['errors']}{where}"
    assert not res["widget_errors"], f"a widget was not displayed: {res['widget_errors']}{where}"
    assert not res["stderr"], f"stderr output (warnings?) in the notebook: {res['stderr']}{where}"


def _step(res: dict, label: str) -> dict:
    step = next(w for w in res["widgets"] if w["label"] == label)
    assert step["changed"] and not step["same_after"], (
        f"{label}: the widget's output did not change after the control was changed "
        f"(widget front end and kernel disagree?): {step}")
    return step


MODELS = ("Popularity", "ItemKNN", "ALS", "BPR-MF", "item2vec", "Explicit MF")
CLASSIC_SCOPE = ".jp-OutputArea-output:has(.widget-toggle-buttons)"


def test_classic_side_by_side_widget(lab, drive):
    """Notebook 03: "random user" shows another user's top-10; the top-k slider adds a row."""
    release_without_exercises("03_matrix_factorization", lab["dir"] / "03-demo.ipynb")
    probes = {"user": "input[type=number]", "k": ".widget-slider .widget-readout", "who": ".widget-html-content b"}
    steps = [
        {"label": "random-user", "scope": CLASSIC_SCOPE, "action": "click",
         "target": 'button:has-text("random user")', "watch": "table", "probes": probes},
        {"label": "top-k", "scope": CLASSIC_SCOPE, "action": "keys", "target": ".widget-slider .noUi-handle",
         "value": ["ArrowRight"], "watch": "table", "probes": probes},
    ]
    res = drive("03-demo.ipynb", "demo03", *[a for s in steps for a in ("--widget", json.dumps(s))],
                timeout=RUN_ALL_S)
    _check_run(res)

    user = _step(res, "random-user")
    before, after = user["before"], user["after"]
    for side in (before, after):
        header = side["text"].splitlines()[0] if side["text"] else ""
        assert all(m in header for m in MODELS), f"the table's header lacks a model: {header!r}"
        assert _rows(side["text"]) == 10, f"expected 10 ranks, got {_rows(side['text'])}:\n{side['text'][:800]}"
    assert after["probes"]["user"] != before["probes"]["user"], f"the user ID did not change: {user}"
    assert after["probes"]["who"] == f"user {after['probes']['user']}", (
        f"the profile shown is not the new user's: {after['probes']}")

    k = _step(res, "top-k")
    k_after = int(k["after"]["probes"]["k"])
    assert k["before"]["probes"]["k"] == "10" and k_after > 10, f"the top-k slider did not move: {k}"
    assert _rows(k["after"]["text"]) == k_after, (
        f"top-k = {k_after} but the table has {_rows(k['after']['text'])} ranks")


ATTENTION_SCOPE = ".jp-OutputArea-output:has(.widget-dropdown):has(.widget-slider)"


def test_attention_widget(lab, drive):
    """Notebook 06: another user, another query position, another block: another plot each time."""
    release_without_exercises("06_sasrec", lab["dir"] / "06-demo.ipynb")
    probes = {"user": ".widget-dropdown select >> nth=0", "position": ".widget-slider .widget-readout",
              "block": ".widget-dropdown select >> nth=1"}
    common = {"scope": ATTENTION_SCOPE, "watch": "img", "probes": probes}
    steps = [
        {"label": "user", "action": "select", "target": ".widget-dropdown select >> nth=0", "value": {"index": 1}},
        {"label": "position", "action": "keys", "target": ".widget-slider .noUi-handle", "value": ["ArrowLeft"]},
        {"label": "block", "action": "select", "target": ".widget-dropdown select >> nth=1", "value": {"index": 0}},
    ]
    res = drive("06-demo.ipynb", "demo06", *[a for s in steps for a in ("--widget", json.dumps({**common, **s}))],
                timeout=RUN_ALL_S)
    _check_run(res)

    user = _step(res, "user")
    for side in (user["before"], user["after"]):
        assert side["n_images"] == 1, f"expected one attention plot, got {side['n_images']}: {side}"
    assert user["after"]["probes"]["user"] != user["before"]["probes"]["user"], f"the user did not change: {user}"

    pos = _step(res, "position")
    assert int(pos["after"]["probes"]["position"]) == int(pos["before"]["probes"]["position"]) - 1, (
        f"the position slider did not move one step left: {pos['before']['probes']} -> {pos['after']['probes']}")
    assert pos["after"]["n_images"] == 1

    block = _step(res, "block")
    assert (block["before"]["probes"]["block"], block["after"]["probes"]["block"]) == ("2", "1"), (
        f"the block selector did not go from 2 to 1: {block['before']['probes']} -> {block['after']['probes']}")
    assert block["after"]["n_images"] == 1
