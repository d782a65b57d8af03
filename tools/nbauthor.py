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
BRANCH = "main"

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}


def _src(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def badges(name: str) -> str:
    path = f"notebooks/{name}/{name}.ipynb"
    colab = f"https://colab.research.google.com/github/{REPO_SLUG}/blob/{BRANCH}/{path}"
    binder = f"https://mybinder.org/v2/gh/{REPO_SLUG}/{BRANCH}?labpath={path}"
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
            f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder})")


SETUP = '''\
# Setup: on Colab, install course_lib (Colab's own torch is kept); elsewhere it is already installed.
import os, sys, warnings
if "google.colab" in sys.modules:
    %pip install -q "course-lib @ git+https://github.com/{slug}@{branch}"
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import course_lib as cl
'''


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
        body = SETUP.format(slug=REPO_SLUG, branch=BRANCH) + (_src(extra) + "\n" if extra else "")
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
