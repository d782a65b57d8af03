"""Shared fixtures of the browser tier: one JupyterLab server per session, the browser script.

The server runs from the repository's environment on 127.0.0.1, on a free port,
with a token, with temporary config/settings/runtime folders, serving a temporary
folder that the tests copy notebooks into. Its kernels inherit ``COURSE_FAST=1``
(every notebook's ``SMOKE = cl.fast_mode()`` is then True) and the course's data
folder. The browser is Debian's /usr/bin/chromium, driven by playwright-core from
tests/browser/node_modules (``tools/setup_browser.sh`` installs both). Without them
the tests skip, unless COURSE_REQUIRE_BROWSER=1 (CI), where they fail. Screenshots,
the browser script's results and the server log go to tests/artifacts/.

Fixtures: ``lab`` (the server: url, token, dir, log, overrides), ``drive`` (run
tests/browser/run_notebook.mjs on a notebook of ``lab["dir"]`` and return its JSON
result; the notebook's kernel is shut down afterwards).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path(os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium"))
PLAYWRIGHT = HERE / "node_modules" / "playwright-core" / "package.json"
SCRIPT = HERE / "run_notebook.mjs"
BIN = Path(sys.executable).parent  # the environment's bin/: jupyter, and the kernel's python

SERVER_START_S = 90
RUN_ALL_S = 180  # default bound on Run All Cells, per notebook

# JupyterLab settings for a test session: no news/update pop-ups, and every cell in
# the DOM (no windowing), so the browser script sees every prompt and output.
OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    "@jupyterlab/extensionmanager-extension:plugin": {"enabled": False},
}


def _missing() -> list[str]:
    why = []
    if not (CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)):
        why.append(f"{CHROMIUM} is missing")
    if shutil.which("node") is None:
        why.append("node is missing")
    if not PLAYWRIGHT.exists():
        why.append("tests/browser/node_modules/playwright-core is missing")
    if not (BIN / "jupyter-lab").exists():
        why.append(f"jupyter-lab is not installed in {BIN}")
    return why


@pytest.fixture(scope="session", autouse=True)
def _browser_available():
    why = _missing()
    if why:
        msg = "browser tier unavailable: " + "; ".join(why) + " (run tools/setup_browser.sh)"
        if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " [COURSE_REQUIRE_BROWSER=1]", pytrace=False)
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _api(lab: dict, path: str, method: str = "GET", timeout: float = 10.0):
    """A call to the server's REST API with the token; the decoded JSON reply (or None)."""
    req = urllib.request.Request(f"{lab['url']}{path}", method=method,
                                 headers={"Authorization": f"token {lab['token']}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A JupyterLab server on loopback serving an empty temporary folder; shut down at teardown."""
    from course_lib.data import cache_dir

    base = tmp_path_factory.mktemp("lab")
    serve = base / "serve"
    serve.mkdir()
    app_settings = base / "app-settings"
    app_settings.mkdir()
    (app_settings / "overrides.json").write_text(json.dumps(OVERRIDES, indent=1))
    for d in ("config", "runtime", "user-settings", "workspaces", "home"):
        (base / d).mkdir()

    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the Makefile sets Agg; a student's kernel uses the inline backend
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(base / "home" / ".ipython"),
        MPLCONFIGDIR=str(base / "home" / "mpl"),
        # Passed on to the kernels (they inherit the server's environment): SMOKE runs,
        # on the course's data folder (filled by `make data`; nothing is downloaded).
        COURSE_FAST="1",
        COURSE_DATA_DIR=str(cache_dir()),
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        str(BIN / "jupyter-lab"), "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={serve}",
        f"--LabApp.app_settings_dir={app_settings}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.allow_root=True",  # CI containers run as root
        "--ServerApp.shutdown_no_activity_timeout=900",  # a leaked server ends on its own
        "--MappingKernelManager.cull_idle_timeout=900",
    ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"jupyterlab-server-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=serve, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}; see {log_path}:\n"
                            + log_path.read_text()[-3000:], pytrace=False)
            try:
                if _get(f"{url}/api/status?token={token}", timeout=2) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s; see {log_path}", pytrace=False)
            time.sleep(0.5)
        yield {"url": url, "token": token, "dir": serve, "log": log_path, "overrides": OVERRIDES}
    finally:
        _shutdown(proc, url, token)
        log.close()


def _shutdown(proc: subprocess.Popen, url: str, token: str) -> None:
    """Ask the server to stop (it stops its kernels), then insist, all bounded."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(f"{url}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(req, timeout=5).close()
        except (OSError, urllib.error.URLError):
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    # The server ran in its own session: end anything of that group that is left (kernels).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=5)


def _stop_sessions(lab: dict) -> None:
    """Shut down the kernels this server started (a demo's kernel holds trained models)."""
    try:
        for s in _api(lab, "/api/sessions") or []:
            _api(lab, f"/api/sessions/{s['id']}", method="DELETE")
    except (OSError, urllib.error.URLError, ValueError):
        pass


@pytest.fixture
def drive(lab):
    """``drive(notebook, name, *args, timeout=RUN_ALL_S)``: run the browser script on
    ``lab["dir"] / notebook``; returns its JSON result (also written to
    tests/artifacts/<name>-result.json) after asserting that it succeeded."""

    def run(notebook: str, name: str, *extra: str, timeout: int = RUN_ALL_S) -> dict:
        node_s = timeout + 120
        cmd = ["node", str(SCRIPT), "--url", lab["url"], "--token", lab["token"], "--notebook", notebook,
               "--artifacts", str(ARTIFACTS), "--name", name, "--timeout", str(timeout), *extra]
        try:
            p = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=node_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the browser script did not finish within {node_s} s", pytrace=False)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        assert lines, f"no result from the browser script (exit {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        res = json.loads(lines[-1])
        (ARTIFACTS / f"{name}-result.json").write_text(json.dumps(res, indent=1))
        where = f"\nsteps: {res['steps']}\nscreenshots: {res['screenshots']}\nserver log: {lab['log']}"
        assert res["ok"], f"browser run failed: {res.get('failure')}{where}\nstderr: {p.stderr[-2000:]}"
        return res

    yield run
    _stop_sessions(lab)
