"""The package as Colab installs it: a built wheel, installed non-editable, in a fresh environment.

Every local install here is editable, which hides a package list that misses subpackages
(a wheel once shipped without ``course_lib.models``). This test does what Colab's setup
cell does (``pip install "course-lib @ git+..."``): build the wheel, install it into a new
virtual environment without the network, import every module of the package from there,
and run a notebook's setup cells against it. The already-installed dependencies (torch,
numpy, ...) are made visible to the new environment, as Colab's preinstalled ones are.
"""
from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import course_lib

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.unit


def _source_modules() -> set[str]:
    """Every module of course_lib in the source tree (what the wheel must carry)."""
    names = {"course_lib"}
    for info in pkgutil.walk_packages([str(ROOT / "course_lib")], prefix="course_lib."):
        names.add(info.name)
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a clean copy: a stale build/ folder in the checkout would hide a missing package
    import shutil
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "course_lib", src / "course_lib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(out), str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    wheels = list(out.glob("course_lib-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_carries_every_subpackage(wheel):
    with zipfile.ZipFile(wheel) as z:
        files = set(z.namelist())
    carried = {f[:-3].replace("/", ".").removesuffix(".__init__") for f in files if f.endswith(".py")}
    missing = _source_modules() - carried
    assert not missing, f"the wheel lacks {sorted(missing)}: fix the package discovery in pyproject.toml"


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> Path:
    """A new venv with the wheel installed non-editable; the current environment's
    site-packages appended to its path (its dependencies, not its editable course_lib)."""
    env = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # a .pth line only appends the folder to sys.path: the editable install's finder hook
    # (another .pth inside that folder) is not run, so course_lib must come from the wheel
    Path(site, "zz_host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                        "-q", str(wheel)], capture_output=True, text=True)
    if p.returncode != 0 and "no such option: --python" in p.stderr:  # pip < 22.3
        pytest.skip("pip too old for --python")
    assert p.returncode == 0, p.stderr[-3000:]
    return py


def _run(py: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_installed_wheel_imports_every_module(fresh_env, tmp_path):
    modules = sorted(_source_modules())
    code = (
        "import importlib, json, course_lib\n"
        f"mods = {modules!r}\n"
        "bad = {}\n"
        "for m in mods:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ImportError as e:\n"
        "        bad[m] = repr(e)\n"
        "print(json.dumps({'file': course_lib.__file__, 'bad': bad}))\n")
    p = _run(fresh_env, code, tmp_path)  # cwd outside the checkout: no import from the source tree
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert str(fresh_env.parent.parent) in out["file"], f"course_lib came from {out['file']}, not the wheel"
    # the optional LLM extra may be absent from the host; everything else must import
    hard = {m: e for m, e in out["bad"].items() if not m.startswith("course_lib.llm")}
    assert not hard, hard


def test_notebook_setup_cells_run_against_the_wheel(fresh_env, tmp_path):
    """The setup and parameters cells of notebook 06 (course_lib.models, .demos, .train),
    as a student on Colab runs them, minus Colab's own install line."""
    nb = json.loads((ROOT / "solutions" / "06_sasrec" / "06_sasrec.ipynb").read_text())
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"][:2]
    lines = []
    for c in code_cells:
        for line in "".join(c["source"]).splitlines():
            if line.strip().startswith(("%", "!")):
                line = line[: len(line) - len(line.lstrip())] + "pass"
            lines.append(line)
    lines += ["from course_lib.models import Popularity, SASRec, GRU4Rec, BERT4Rec",
              "from course_lib.models.sasrec import SASRecConfig",
              "from course_lib.demos import attention, classic",
              "import course_lib",
              "m = SASRec(20, SASRecConfig(hidden=8, max_len=5))",
              "print('ok', type(m).__name__, course_lib.__file__)"]
    p = _run(fresh_env, "\n".join(lines), tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ok SASRec" in p.stdout and str(fresh_env.parent.parent) in p.stdout, p.stdout
