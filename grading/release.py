"""Generate the student release (notebooks/) from the instructor sources (solutions/).

    python grading/release.py            # regenerate notebooks/ (deterministic)
    python grading/release.py --check    # exit 1 and list the differences if notebooks/ is stale

nbgrader's ``generate_assignment`` removes the solutions and hidden tests and adds
checksums; we then normalise the JSON (no outputs, no execution counts, stable keys
and metadata) so that regenerating an unchanged source gives a byte-identical file.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRADING = ROOT / "grading"
KEEP_NB_METADATA = ("kernelspec", "language_info")


def assignments(root: Path = ROOT) -> list[str]:
    """Every assignment: a folder of solutions/ holding a notebook of the same name."""
    return sorted(p.name for p in (root / "solutions").iterdir()
                  if p.is_dir() and (p / f"{p.name}.ipynb").exists())


def nbgrader_env() -> dict:
    """nbgrader shells out to `alembic` by name: put this interpreter's bin/ first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def normalise(nb: dict) -> dict:
    nb["metadata"] = {k: nb["metadata"][k] for k in KEEP_NB_METADATA if k in nb.get("metadata", {})}
    if "language_info" in nb["metadata"]:
        nb["metadata"]["language_info"] = {"name": nb["metadata"]["language_info"].get("name", "python")}
    for cell in nb["cells"]:
        cell["metadata"].pop("execution", None)
        cell["metadata"].pop("papermill", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def generate(dest: Path, names: list[str] | None = None) -> list[Path]:
    """Release every assignment into ``dest/<name>/<name>.ipynb``; returns the written files."""
    names = names or assignments()
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in names:
            cmd = [sys.executable, "-m", "nbgrader", "generate_assignment", name, "--force", "--quiet",
                   "--CourseDirectory.release_directory=" + str(tmp / "release"),
                   "--CourseDirectory.db_url=sqlite:///" + str(tmp / "release.db")]
            proc = subprocess.run(cmd, cwd=GRADING, env=nbgrader_env(), capture_output=True, text=True)
            src = tmp / "release" / name / f"{name}.ipynb"
            if proc.returncode != 0 or not src.exists():
                raise SystemExit(f"nbgrader generate_assignment {name} failed:\n{proc.stdout}\n{proc.stderr}")
            out = dest / name / f"{name}.ipynb"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(dumps(normalise(json.loads(src.read_text(encoding="utf-8")))), encoding="utf-8")
            written.append(out)
    return written


def check() -> list[str]:
    """Differences between a fresh release and notebooks/ (empty when up to date)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.relative_to(tmp): p for p in generate(Path(tmp))}
        committed = {p.relative_to(ROOT / "notebooks"): p for p in (ROOT / "notebooks").glob("*/*.ipynb")}
        for rel in sorted(set(fresh) | set(committed)):
            if rel not in committed:
                problems.append(f"notebooks/{rel} is missing")
            elif rel not in fresh:
                problems.append(f"notebooks/{rel} has no source in solutions/")
            else:
                a = committed[rel].read_text(encoding="utf-8").splitlines()
                b = fresh[rel].read_text(encoding="utf-8").splitlines()
                if a != b:
                    diff = "\n".join(list(difflib.unified_diff(a, b, "committed", "fresh", lineterm=""))[:20])
                    problems.append(f"notebooks/{rel} is out of date with solutions/:\n{diff}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that notebooks/ is up to date")
    ap.add_argument("names", nargs="*", help="assignments (default: all)")
    args = ap.parse_args(argv)
    if args.check:
        problems = check()
        for p in problems:
            print(p)
        if problems:
            print("\nRun `make release` to regenerate notebooks/ from solutions/.")
            return 1
        print("notebooks/ is up to date with solutions/")
        return 0
    release = ROOT / "notebooks"
    for name in args.names or assignments():
        shutil.rmtree(release / name, ignore_errors=True)
    for p in generate(release, args.names or None):
        print(f"released {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
