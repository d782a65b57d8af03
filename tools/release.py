"""Generate the student release (notebooks/) from the instructor sources (solutions/).

    python -m tools.release              # regenerate notebooks/ (deterministic)
    python -m tools.release 04_markov_chains   # regenerate only these assignments
    python -m tools.release --check      # exit 1 and list the differences if notebooks/ is stale

(``python tools/release.py ...`` works the same.) An authoring tool: grading never runs it.

nbgrader's ``generate_assignment`` removes the solutions and hidden tests and adds
checksums; we then normalise the JSON (no outputs, no execution counts, stable keys
and metadata) so that regenerating an unchanged source gives a byte-identical file.
"""
from __future__ import annotations

import argparse
import difflib
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as `python tools/release.py`: make the repository importable
    sys.path.insert(0, str(ROOT))

from grading.assignment import discover  # noqa: E402
from grading.nbgrader_cli import run_nbgrader  # noqa: E402

KEEP_NB_METADATA = ("kernelspec", "language_info")


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
    names = names or discover(released=False)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in names:
            proc = run_nbgrader(["generate_assignment", name, "--force", "--quiet",
                                 "--CourseDirectory.release_directory=" + str(tmp / "release"),
                                 "--CourseDirectory.db_url=sqlite:///" + str(tmp / "release.db")])
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
    for name in args.names or discover(released=False):
        shutil.rmtree(release / name, ignore_errors=True)
    for p in generate(release, args.names or None):
        print(f"released {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
