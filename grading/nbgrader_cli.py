"""nbgrader's command line, run the one way every step of the course runs it.

``python -m nbgrader`` with this interpreter, from grading/ (so that nbgrader loads
``grading/nbgrader_config.py``). nbgrader shells out to ``alembic`` by name to set up its
gradebook, so this interpreter's bin/ goes first on PATH: the virtual environment's alembic
is found even when the environment is not activated.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GRADING = Path(__file__).resolve().parent


def nbgrader_env() -> dict:
    """A copy of this process's environment with this interpreter's bin/ first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_nbgrader(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``nbgrader <args>`` from grading/; returns the finished process (output captured as
    text). A failure is not raised: the caller reads ``returncode`` and says what to do."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    return subprocess.run(cmd, cwd=GRADING, env=nbgrader_env(), capture_output=True, text=True)
