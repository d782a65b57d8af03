"""Browser tier: JupyterLab served on loopback, driven by headless Chromium.

What a student does, checked end to end: open the welcome notebook in JupyterLab,
Run All Cells, see the results (and no error); move an ipywidgets IntSlider and see
the kernel's reply change (this catches the "model not found" class of breakage,
where the widgets' front end and kernel side disagree). The course's own widgets
(notebooks 03 and 06) are checked in test_demos.py.

The server, the browser script and the skip-or-fail rule (COURSE_REQUIRE_BROWSER=1)
are in conftest.py. Screenshots and the server log go to tests/artifacts/.
"""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import nbformat
import pytest


# One server for the whole tier: with pytest-xdist's --dist loadgroup (make test) every
# browser test runs on the same worker, one Chromium and one kernel at a time.
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

ROOT = Path(__file__).resolve().parents[2]
WELCOME = ROOT / "solutions" / "00_welcome" / "00_welcome.ipynb"
EXPECTED = ROOT / "tests" / "expected" / "00_welcome.json"


def _widget_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("A slider and the kernel's reply (browser test)."),
        nbformat.v4.new_code_cell(
            "import ipywidgets as widgets\n"
            "from IPython.display import display\n"
            "slider = widgets.IntSlider(value=3, min=0, max=10, description='n')\n"
            "def show(n):\n"
            "    print(f'square of {n} = {n * n}')\n"
            "out = widgets.interactive_output(show, {'n': slider})\n"
            "display(slider, out)"
        ),
    ]
    return nb


@pytest.fixture(scope="module", autouse=True)
def _notebooks(lab):
    shutil.copy(WELCOME, lab["dir"] / "welcome.ipynb")
    nbformat.write(_widget_notebook(), lab["dir"] / "slider.ipynb")


def test_welcome_notebook_runs_in_jupyterlab(lab, drive):
    res = drive("welcome.ipynb", "welcome",
                 "--expect", "[recorded] interactions =", "--expect", "[recorded] device =",
                 "--expect", "torch")
    where = f"\nscreenshots: {res['screenshots']}"
    assert not res["errors"], f"error output in the notebook: {res['errors']}{where}"
    assert not res["stderr"], f"stderr output (warnings?) in the notebook: {res['stderr']}{where}"
    assert res["images"] >= 1, f"no figure rendered (matplotlib inline backend?){where}"
    for text, seen in res["expect"].items():
        assert seen["found"] and seen["visible"], f"expected output {text!r} not visible: {seen}{where}"

    # The notebook was saved from the browser: the recorded values are those of a SMOKE run.
    from course_lib.record import read_records

    recorded = read_records(lab["dir"] / "welcome.ipynb")
    expected = json.loads(EXPECTED.read_text())["smoke"]
    for key, want in expected.items():
        assert key in recorded, f"{key!r} was not recorded; got {sorted(recorded)}"
        got = recorded[key]
        if isinstance(want, list):
            assert want[0] <= got <= want[1], f"{key} = {got}, expected in {want} (SMOKE, COURSE_FAST=1)"
        elif key == "device":  # depends on the machine; any device course_lib can pick
            assert got in ("cpu", "cuda", "mps"), f"device = {got!r}"
        else:
            assert got == want, f"{key} = {got!r}, expected {want!r}"


def test_int_slider_round_trip(drive):
    res = drive("slider.ipynb", "slider", "--slider")
    assert not res["errors"], f"error output: {res['errors']}"
    slider = res["slider"]
    assert slider["before"]["value"] == "3" and slider["before"]["reply"] == "square of 3 = 9", slider
    after = int(slider["after"]["value"])
    assert after > 3, f"the slider did not move with the keyboard: {slider}"
    assert slider["after"]["reply"] == f"square of {after} = {after * after}", (
        f"the kernel's reply does not follow the slider: {slider} (widgets front end and kernel disagree?)")


def test_settings_overrides_apply(lab):
    """The news pop-up is off and every cell is rendered: the overrides reached JupyterLab."""
    for plugin, want in lab["overrides"].items():
        req = urllib.request.Request(f"{lab['url']}/lab/api/settings/{plugin}",
                                     headers={"Authorization": f"token {lab['token']}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            reply = json.loads(r.read())
        # Overrides replace the schema's defaults; the user settings stay empty.
        props = reply["schema"]["properties"]
        for key, value in want.items():
            got = reply["settings"].get(key, props.get(key, {}).get("default"))
            assert got == value, f"{plugin}: {key} = {got!r}, override {value!r}"
