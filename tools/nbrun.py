"""Execute course notebooks the one way the tests, `make course` and the reports use.

Every run has an explicit kernel name, a per-cell time limit, the headless plotting
backend and the data cache of this checkout; each notebook runs in a fresh process so
its wall time and the kernel's peak memory (RSS) are measured on their own.

    python -m tools.nbrun solutions/01_interaction_matrix/01_interaction_matrix.ipynb -p SMOKE True
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "python3"
CELL_TIMEOUT = 600  # seconds per cell; default-mode training cells stay well below


@dataclass
class RunResult:
    notebook: str
    output: str
    ok: bool
    seconds: float
    peak_mb: float
    error: str = ""
    records: dict = field(default_factory=dict)


def notebook_env(fast: bool | None = None) -> dict:
    env = dict(os.environ)
    # Headless, and figures still land in the executed notebook as PNGs.
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    env["TQDM_MININTERVAL"] = env.get("TQDM_MININTERVAL", "5")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if fast is not None:
        env["COURSE_FAST"] = "1" if fast else "0"
    return env


def _execute(nb_path: str, out_path: str, params: dict, cwd: str, timeout: int, allow_errors: bool) -> dict:
    """Run in *this* process (a fresh one per notebook); returns a JSON-able result."""
    import papermill as pm

    t0 = time.perf_counter()
    error = ""
    try:
        pm.execute_notebook(nb_path, out_path, parameters=params, kernel_name=KERNEL, cwd=cwd,
                            execution_timeout=timeout, progress_bar=False, log_output=False,
                            allow_errors=allow_errors)
    except Exception as exc:  # papermill raises PapermillExecutionError with the traceback
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the kernel, after it exited
    return {"ok": not error, "seconds": round(seconds, 2), "peak_mb": round(peak_kb / 1024, 1), "error": error}


def run(nb_path: str | Path, out_path: str | Path, params: dict | None = None, fast: bool | None = None,
        timeout: int = CELL_TIMEOUT, allow_errors: bool = False, cwd: str | Path | None = None) -> RunResult:
    """Execute ``nb_path`` with papermill in a fresh process; the executed copy goes to ``out_path``."""
    from course_lib.record import read_records

    nb_path, out_path = Path(nb_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"nb": str(nb_path), "out": str(out_path), "params": params or {},
                          "cwd": str(cwd or nb_path.parent), "timeout": timeout, "allow_errors": allow_errors})
    proc = subprocess.run([sys.executable, "-m", "tools.nbrun", "--child", payload], cwd=ROOT,
                          env=notebook_env(fast), capture_output=True, text=True)
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        res = {"ok": False, "seconds": 0.0, "peak_mb": 0.0, "error": f"runner crashed:\n{proc.stderr[-3000:]}"}
    records = read_records(out_path) if out_path.exists() else {}
    return RunResult(str(nb_path), str(out_path), res["ok"], res["seconds"], res["peak_mb"], res["error"], records)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Execute a course notebook with papermill.")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("notebook", nargs="?")
    ap.add_argument("-o", "--output", help="executed copy (default: build/executed/<name>)")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--fast", action="store_true", help="set COURSE_FAST=1")
    args = ap.parse_args(argv)
    if args.child:
        a = json.loads(args.child)
        print(json.dumps(_execute(a["nb"], a["out"], a["params"], a["cwd"], a["timeout"], a["allow_errors"])))
        return 0
    if not args.notebook:
        ap.error("give a notebook")
    params = {}
    for k, v in args.param:
        try:
            params[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            params[k] = v
    out = args.output or ROOT / "build" / "executed" / Path(args.notebook).name
    r = run(args.notebook, out, params, fast=True if args.fast else None)
    print(json.dumps(asdict(r), indent=1))
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
