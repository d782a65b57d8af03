"""What the grader knows about an assignment, and how it rebuilds a submission to grade.

An assignment is ``solutions/<name>/<name>.ipynb`` (the instructor's source, with
hidden tests) and its release ``notebooks/<name>/<name>.ipynb`` (what students got).
nbgrader's gradebook stores the same locked and test cells with their checksums; the
grader restores them from these sources in their canonical place, so a submission
whose test cells were deleted, edited, reordered, duplicated or stripped of their
metadata is graded with the genuine tests, never left "needs manual grade".
"""
from __future__ import annotations

import ast
import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import guard
from . import integrity

ROOT = Path(__file__).resolve().parent.parent
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def discover(root: Path = ROOT, released: bool = True) -> list[str]:
    """The sorted names of the assignments: every folder of solutions/ holding a notebook of the
    same name and, unless ``released=False`` (what the release step itself lists), its release
    ``notebooks/<name>/<name>.ipynb``."""
    names = sorted(p.name for p in (root / "solutions").iterdir()
                   if p.is_dir() and (p / f"{p.name}.ipynb").exists())
    if released:
        names = [n for n in names if (root / "notebooks" / n / f"{n}.ipynb").exists()]
    return names


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else (s or "")


def _norm(s: str) -> str:
    return "\n".join(line.rstrip() for line in s.strip().splitlines())


def split_hidden(source: str) -> tuple[str, str]:
    """(visible part, hidden part) of an instructor test cell."""
    vis, hid, inside = [], [], False
    for line in source.splitlines():
        if line.strip() == HIDDEN_BEGIN:
            inside = True
        elif line.strip() == HIDDEN_END:
            inside = False
        elif inside:
            hid.append(line)
        else:
            vis.append(line)
    return "\n".join(vis), "\n".join(hid)


@dataclass
class Canon:
    role: str                # plain | answer | locked | test
    source: str              # what the grader runs (instructor's version; for answers the release stub)
    cell_type: str = "code"
    grade_id: str = ""
    cell_id: str = ""
    points: float = 0.0
    hidden: str = ""         # tests only
    seg: int = 0             # answers/plain: index of the next locked cell
    full: str = ""           # the instructor's source as written (tests: with hidden part)


@dataclass
class Assignment:
    name: str
    source_path: Path
    release_path: Path
    cells: list = field(default_factory=list)
    tests: list = field(default_factory=list)          # Canon of role test, in order
    test_of_answer: dict = field(default_factory=dict)    # answer grade_id -> the test grade_id that follows
    exercises: integrity.Exercises = field(default_factory=integrity.Exercises)  # what each answer must not use
    public_text: str = ""    # every cell of the source outside the hidden blocks

    @property
    def notebook(self) -> str:
        return self.name

    @property
    def references(self) -> dict:
        """test grade_id -> the course_lib targets its tests compare with."""
        return {t.grade_id: self.exercises.tested.get(t.grade_id, set()) for t in self.tests}

    @property
    def max_score(self) -> float:
        return float(sum(t.points for t in self.tests))

    def hidden_lines(self) -> list[str]:
        """Every line of hidden test code, and every string constant in it (8+ characters):
        what must never reach a student."""
        lines = []
        for t in self.tests:
            lines += [ln.strip() for ln in t.hidden.splitlines() if len(ln.strip()) >= 8]
            tree = _parse(t.hidden)
            if tree:
                lines += [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                          and isinstance(n.value, str) and len(n.value.strip()) >= 8]
        # what also appears outside the hidden blocks (visible code, prose) is no secret
        return sorted({x for x in lines if x not in self.public_text})


def load(name: str, root: Path = ROOT) -> Assignment:
    src = root / "solutions" / name / f"{name}.ipynb"
    rel = root / "notebooks" / name / f"{name}.ipynb"
    if not src.exists():
        raise FileNotFoundError(f"no source notebook {src}")
    if not rel.exists():
        raise FileNotFoundError(f"no release notebook {rel}: run `python -m tools.release {name}` first")
    snb = json.loads(src.read_text(encoding="utf-8"))
    rnb = json.loads(rel.read_text(encoding="utf-8"))
    release_by_gid = {}
    for c in rnb["cells"]:
        gid = (c.get("metadata", {}).get("nbgrader") or {}).get("grade_id")
        if gid:
            release_by_gid[gid] = _src(c)
    a = Assignment(name, src, rel)
    a.public_text = "\n".join(split_hidden(_src(c))[0] for c in snb["cells"]) + "\n" + rel.read_text(encoding="utf-8")
    seg = 0
    last_answer = None
    code_cells = []  # (role, grade_id, source, hidden) for the integrity check
    for c in snb["cells"]:
        md = c.get("metadata", {}).get("nbgrader") or {}
        gid = md.get("grade_id", "")
        if md.get("grade") and c["cell_type"] == "code" and not md.get("solution"):
            visible, hidden = split_hidden(_src(c))
            visible = release_by_gid.get(gid, visible)
            can = Canon("test", visible, "code", gid, c.get("id", ""), float(md.get("points", 0)), hidden, seg,
                        _src(c))
            a.tests.append(can)
            code_cells.append(("test", gid, visible, hidden))
            if last_answer:
                a.test_of_answer[last_answer] = gid
            seg += 1
        elif md.get("solution"):
            can = Canon("answer", release_by_gid.get(gid, _src(c)), c["cell_type"], gid, c.get("id", ""), seg=seg)
            if c["cell_type"] == "code":
                code_cells.append(("answer", gid, _src(c), ""))
            last_answer = gid
        elif md.get("locked") and gid:
            can = Canon("locked", release_by_gid.get(gid, _src(c)), c["cell_type"], gid, c.get("id", ""), seg=seg)
            seg += 1
        else:
            can = Canon("plain", _src(c), c["cell_type"], "", c.get("id", ""), seg=seg)
        if can.role in ("locked", "plain") and can.cell_type == "code":
            code_cells.append(("course", gid, can.source, ""))
        a.cells.append(can)
    a.exercises = integrity.exercise_references(name, code_cells, a.test_of_answer)
    return a


# --------------------------------------------------------------------------- static checks

_parse = integrity.parse  # one reading of notebook code (magics and shell lines become `pass`)


SUSPICIOUS = {
    "showtraceback": "touches IPython's traceback display",
    "get_ipython": "reaches into the IPython kernel",
    "InteractiveShell": "reaches into the IPython kernel",
    "sys.modules": "swaps imported modules",
    "__builtins__": "changes Python's builtins",
    "builtins": "changes Python's builtins",
    "os._exit": "kills its own process",
    "os.kill": "sends signals to processes",
    "os.fork": "forks processes",
    "ctypes": "uses ctypes",
    "gc.get_objects": "walks the interpreter's memory",
    "gc.get_referrers": "walks the interpreter's memory",
    "sys._getframe": "inspects the caller's frames",
    "inspect.currentframe": "inspects the caller's frames",
    "sys.settrace": "installs a tracer",
    "settrace": "installs a tracer",
    "setprofile": "installs a profiler",
    "addaudithook": "installs an audit hook",
    "IPKernelApp": "reaches into the IPython kernel",
    "do_execute": "reaches into the kernel's execute handler",
    "run_cell": "reaches into the IPython shell",
    "excepthook": "replaces the exception hooks",
    "f_back": "walks the callers' frames",
    "f_locals": "reads the callers' variables",
    "socket": "opens network sockets",
    "subprocess": "starts programs",
    "pickle.load": "unpickles data (may run code)",
    "__eq__": "defines equality (an object that equals anything?)",
    "linecache": "reads cached cell sources",
    "__grader": "touches the grader's guard",
    "gradebook": "looks for the gradebook",
    "solutions": "looks for the solutions",
    "__closure__": "reads a function's closure (unwraps the grader's watch on a reference?)",
    "cell_contents": "reads or changes a closure cell (unwraps the grader's watch on a reference?)",
    "__code__": "reads or swaps a function's code",
    "reload(": "reloads a module (a fresh, unwatched copy of course_lib?)",
    "spec_from_file_location": "loads a second copy of a module from its file",
    "exec_module": "executes a module's code itself",
    "SourceFileLoader": "loads a second copy of a module from its file",
}


def static_flags(source: str) -> list[str]:
    """Human-readable reasons to look at a student's code (listed in the report, never scored)."""
    found = []
    tree = _parse(source)
    text = source
    for key, why in SUSPICIOUS.items():
        if key in text:
            found.append(f"{why} (`{key}`)")
    if tree:
        for n in ast.walk(tree):
            # np.allclose = ..., setattr(np, ...)
            if isinstance(n, (ast.Assign, ast.AugAssign)):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                for t in targets:
                    if isinstance(t, ast.Attribute):
                        base = t
                        while isinstance(base, ast.Attribute):
                            base = base.value
                        if isinstance(base, ast.Name) and base.id in ("np", "numpy", "torch", "pd", "pandas", "cl",
                                                                      "course_lib", "math", "sys", "IPython"):
                            found.append(f"monkeypatches `{ast.unparse(t)}`")
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("setattr", "exec", "eval",
                                                                                          "__import__", "compile"):
                found.append(f"calls `{n.func.id}()`")
            if isinstance(n, ast.ClassDef) and any(isinstance(b, ast.Name) and b.id in ("float", "int") for b in n.bases):
                found.append(f"subclasses a number type (`class {n.name}`)")
    return sorted(set(found))


# --------------------------------------------------------------------------- rebuilding a submission

def _code(source: str, role: str, grade_id: str = "", **extra) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": "", "outputs": [], "source": source,
            "metadata": {"grader": {"role": role, "grade_id": grade_id, **extra}}}


def rebuild(student: dict, a: Assignment) -> tuple[dict, list[str]]:
    """The notebook the grader runs: the student's answers and own cells, with every locked and
    test cell restored (canonical source and place), guards around the tests, hidden tests split
    into their own cells. Returns (notebook, notes on what was repaired)."""
    notes = []
    cells = student.get("cells")
    if not isinstance(cells, list):
        cells = []
    canon_by_gid = {c.grade_id: c for c in a.cells if c.grade_id}
    canon_by_id = {c.cell_id: c for c in a.cells if c.cell_id and c.role in ("plain", "answer")}
    plain_by_src = {_norm(c.source): c for c in a.cells if c.role == "plain" and c.cell_type == "code"}
    locked_by_src = {}
    for c in a.cells:
        if c.role in ("locked", "test"):
            locked_by_src[_norm(c.source)] = c
            if c.full:
                locked_by_src[_norm(c.full)] = c
    locked = [c for c in a.cells if c.role in ("locked", "test")]
    n_seg = len(locked) + 1
    by_seg: list[list[dict]] = [[] for _ in range(n_seg)]
    seen_locked, seen_answers = set(), set()
    cur = 0
    for raw in cells:
        if not isinstance(raw, dict) or raw.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        cell = copy.deepcopy(raw)
        md = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        nbg = md.get("nbgrader") if isinstance(md.get("nbgrader"), dict) else {}
        gid = nbg.get("grade_id")
        can = canon_by_gid.get(gid) if isinstance(gid, str) else None
        src = _src(cell)
        if can is not None and can.role in ("locked", "test"):
            if gid in seen_locked:
                notes.append(f"removed a duplicate of the locked cell `{gid}`")
            elif _norm(src) not in (_norm(can.source), _norm(can.full)):
                notes.append(f"restored the edited cell `{gid}`")
            seen_locked.add(gid)
            cur = locked.index(can) + 1
            continue
        if can is not None and can.role == "answer" and gid not in seen_answers:
            seen_answers.add(gid)
            cur = can.seg
            by_seg[cur].append(_student_cell(cell, "answer", gid))
            continue
        if cell.get("cell_type") == "code" and _norm(src) in locked_by_src:
            c2 = locked_by_src[_norm(src)]
            notes.append(f"removed a copy of the locked cell `{c2.grade_id}` (its metadata was missing)")
            cur = locked.index(c2) + 1
            continue
        if can is not None and can.role == "answer":
            notes.append(f"a second answer cell `{gid}` was kept as an ordinary cell")
        known = canon_by_id.get(cell.get("id")) or (plain_by_src.get(_norm(src)) if cell.get("cell_type") == "code" else None)
        role = "student"
        if known is not None and known.role == "plain":
            cur = known.seg
            if _norm(src) == _norm(known.source):
                role = "plain"  # the course's own cell, unchanged
        by_seg[cur].append(_student_cell(cell, role, ""))
    for gid in [c.grade_id for c in locked if c.grade_id not in seen_locked]:
        notes.append(f"restored the missing cell `{gid}`")
    for c in a.cells:
        if c.role == "answer" and c.grade_id not in seen_answers:
            notes.append(f"the answer cell `{c.grade_id}` was missing (or lost its metadata): the release stub runs first")
            by_seg[c.seg].insert(0, _code(c.source, "stub", c.grade_id) if c.cell_type == "code"
                                 else {"cell_type": "markdown", "id": "", "metadata": {}, "source": c.source})
    out = [_code(guard.SNAPSHOT, "guard")]
    for k in range(n_seg):
        out += by_seg[k]
        if k < len(locked):
            c = locked[k]
            if c.role == "locked":
                if c.cell_type == "code":
                    out.append(_code(c.source, "locked", c.grade_id))
                else:
                    out.append({"cell_type": c.cell_type, "id": "", "source": c.source,
                                "metadata": {"grader": {"role": "locked", "grade_id": c.grade_id}}})
            else:
                out.append(_code(guard.CHECK.format(where=c.grade_id), "check", c.grade_id))
                out.append(_code(c.source, "visible", c.grade_id))
                if c.hidden.strip():
                    out.append(_code(guard.hidden_cell(c.hidden), "hidden", c.grade_id))
                    out.append(_code(guard.SCRUB, "scrub", c.grade_id))
    for i, cell in enumerate(out):
        cell["id"] = f"g{i:04d}"
        if cell["cell_type"] == "markdown":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
        if cell["cell_type"] == "raw":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    nb = {"cells": out, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                     "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    return nb, notes


def _student_cell(cell: dict, role: str, gid: str) -> dict:
    ctype = cell.get("cell_type")
    src = _src(cell)
    if ctype == "code":
        return _code(src, role, gid)
    return {"cell_type": ctype, "id": "", "source": src, "metadata": {"grader": {"role": role, "grade_id": gid}}}


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


_WS = re.compile(r"\s+")
