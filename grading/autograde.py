"""Grade one submission, or a whole class in parallel, safely.

    grade_submission(assignment, folder, student, out_dir, limits, slot) -> result dict

For each submission: find the notebook (renamed ones too), read it (an empty, corrupt
or non-notebook file is reported, never scored zero silently), rebuild it with the
genuine tests (assignment.rebuild), run it with the kernel in the sandbox
(runner.execute), score every test from the kernel's reply status, write the executed
notebook (instructor only), the result and the student's feedback (feedback.write).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from . import assignment as asg
from .runner import Limits, execute

MAX_NOTEBOOK_MB = 50
SKIP_FILES = {".ipynb_checkpoints", "__pycache__"}


def find_notebook(folder: Path, name: str) -> tuple[Path | None, list[str]]:
    """The submitted notebook: ``<name>.ipynb``, else the only ``.ipynb`` there (renamed)."""
    notes = []
    exact = folder / f"{name}.ipynb"
    if exact.is_file():
        return exact, notes
    nbs = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file())
    if len(nbs) == 1:
        notes.append(f"the notebook was renamed to `{nbs[0].name}`; graded as `{name}.ipynb`")
        return nbs[0], notes
    if len(nbs) > 1:
        best = max(nbs, key=lambda p: (p.stat().st_mtime, p.name))
        notes.append(f"{len(nbs)} notebooks and none named `{name}.ipynb`; graded the newest, `{best.name}`")
        return best, notes
    return None, notes


def read_notebook(path: Path) -> tuple[dict | None, str]:
    """(notebook, "") or (None, why it cannot be graded)."""
    size = path.stat().st_size
    if size == 0:
        return None, "the submitted file is empty (0 bytes)"
    if size > MAX_NOTEBOOK_MB * 2**20:
        return None, f"the submitted file is larger than {MAX_NOTEBOOK_MB} MB"
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, "the submitted file is not a notebook (not UTF-8 text; a binary file?)"
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"the submitted file is not valid notebook JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None, "the submitted file is JSON but not a Jupyter notebook (no list of cells)"
    if nb.get("nbformat") != 4:
        return None, f"unsupported notebook format {nb.get('nbformat')!r} (expected nbformat 4)"
    return nb, ""


def stage_files(a: asg.Assignment, folder: Path | None, dest: Path, nb_path: Path | None) -> None:
    """Release-side files of the assignment, then the student's own files (never the notebook's
    executed copy, never anything outside the student's folder, symlinks dropped)."""
    dest.mkdir(parents=True, exist_ok=True)
    rel = a.release_path.parent
    for p in rel.iterdir():
        if p.name in SKIP_FILES or p.is_symlink():
            continue
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, dest / p.name)
    if folder is None:
        return
    total = 0
    for p in sorted(folder.rglob("*")):
        if any(part in SKIP_FILES for part in p.parts) or p.is_symlink() or not p.is_file():
            continue
        if nb_path is not None and p == nb_path:
            continue
        total += p.stat().st_size
        if total > 200 * 2**20:
            break
        target = dest / p.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)


def score(a: asg.Assignment, nb: dict, run) -> tuple[dict, list[str]]:
    """Per-test outcome from the kernel's reply status of the guard/visible/hidden cells."""
    tests = {t.grade_id: {"points": t.points, "score": 0.0, "passed": False, "reason": "not run"} for t in a.tests}
    flags = []
    by_gid: dict[str, dict] = {}
    for i, cell in enumerate(nb["cells"]):
        g = cell.get("metadata", {}).get("grader", {})
        if g.get("role") in ("check", "visible", "hidden"):
            by_gid.setdefault(g["grade_id"], {})[g["role"]] = run.cells.get(i)
        if g.get("role") == "guard":
            r = run.cells.get(i)
            if r is not None and r.status != "ok":
                flags.append(f"tampering: the grader's setup failed ({r.ename}: {r.evalue[:200]})")
    for t in a.tests:
        res = by_gid.get(t.grade_id, {})
        chk, vis, hid = res.get("check"), res.get("visible"), res.get("hidden")
        out = tests[t.grade_id]
        if chk is not None and chk.status == "error":
            if chk.ename == "__GraderTampering" or "GraderTampering" in chk.ename:
                flags.append(f"tampering: {chk.evalue[:300]}")
            else:
                flags.append(f"tampering: the grader's check before `{t.grade_id}` failed ({chk.ename})")
        if vis is None or vis.status == "not run":
            out["reason"] = "not run (the notebook stopped before this test)"
            continue
        if vis.status == "timeout":
            out["reason"] = "the test ran past the time limit (an endless loop?)"
            continue
        if vis.status != "ok":
            out["reason"] = f"{vis.ename}: {vis.evalue}".strip()[:500]
            continue
        if t.hidden.strip():
            if hid is None:
                out["reason"] = "hidden tests not run (the notebook stopped)"
                continue
            if hid.status == "timeout":
                out["reason"] = "hidden tests ran past the time limit (an endless loop?)"
                out["hidden_failed"] = True
                continue
            if hid.status != "ok":
                out["reason"] = f"hidden tests failed ({hid.ename or 'error'})"
                out["hidden_failed"] = True
                continue
        out.update(score=t.points, passed=True, reason="")
    return tests, flags


# What a process says when it ran out of a resource: memory (Python, the C allocator, oneDNN),
# processes, open files, disk. A test that fails this way may have a right answer.
RESOURCE_SIGNS = (
    ("memory", ("MemoryError", "can't allocate memory", "cannot allocate memory", "could not create a primitive",
                "out of memory", "std::bad_alloc", "DefaultCPUAllocator")),
    ("processes", ("Resource temporarily unavailable", "can't start new thread", "BlockingIOError")),
    ("open files", ("Too many open files",)),
    ("disk", ("File too large", "No space left on device")),
)


def resource_exhaustion(run, tests: dict) -> list[str]:
    """Flags for review when a cell or test failed because the process ran out of a resource.

    What a kernel does when memory runs out differs between machines (a MemoryError in the
    student's cell, an allocation failure in a later test, or the kernel killed), so every
    sign counts, and each one flags the submission: it is never a silent loss of points. (A
    killed kernel already makes the row `incomplete`, which needs review too.)"""
    found: dict[str, str] = {}
    texts = [f"{c.ename}: {c.evalue}" for c in run.cells.values() if c.status not in ("ok", "skipped", "not run")]
    texts += [t.get("reason", "") for t in tests.values()]
    for text in texts:
        low = text.lower()
        for kind, signs in RESOURCE_SIGNS:
            if kind not in found and any(s.lower() in low for s in signs):
                found[kind] = text.strip().splitlines()[0][:160] if text.strip() else kind
    return [f"resources: the run ran out of {kind} ({why}); the tests after it may have failed for that "
            f"reason, not for a wrong answer: review it" for kind, why in found.items()]


def needs_review(result: dict) -> bool:
    """One rule for the grade sheet, the gradebook and the report."""
    return result.get("status") != "graded" or bool(result.get("flags"))


def _ungradable(a, student, reason, notes, seconds=0.0) -> dict:
    return {"student": student, "assignment": a.name, "status": "ungradable", "score": None,
            "max_score": a.max_score, "tests": {t.grade_id: {"points": t.points, "score": None, "passed": False,
                                                             "reason": "not graded"} for t in a.tests},
            "flags": [], "notes": notes, "problem": reason, "seconds": round(seconds, 2), "sandbox": ""}


def grade_submission(a: asg.Assignment, folder: Path | None, student: str, out_dir: Path,
                     limits: Limits | None = None, slot: int = 0, nb_path: Path | None = None,
                     feedback_dir: Path | None = None) -> dict:
    """Grade one student's submission folder; writes result.json (+ executed notebook) to out_dir."""
    from . import feedback

    limits = limits or Limits()
    t0 = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    try:
        if nb_path is None:
            if folder is None or not folder.is_dir():
                result = _ungradable(a, student, "no submission folder", notes)
                return _finish(a, result, None, out_dir, feedback_dir)
            nb_path, notes = find_notebook(folder, a.name)
        if nb_path is None:
            others = sorted(p.name for p in folder.iterdir())[:5] if folder else []
            result = _ungradable(a, student, "no notebook (.ipynb) was submitted" +
                                 (f"; found: {', '.join(others)}" if others else " (the folder is empty)"), notes)
            return _finish(a, result, None, out_dir, feedback_dir)
        student_nb, why = read_notebook(nb_path)
        if student_nb is None:
            result = _ungradable(a, student, why, notes, time.monotonic() - t0)
            return _finish(a, result, None, out_dir, feedback_dir)
        nb, repair = asg.rebuild(student_nb, a)
        notes += repair
        flags = []
        for cell in nb["cells"]:
            g = cell["metadata"].get("grader", {})
            if g.get("role") in ("answer", "student") and cell["cell_type"] == "code":  # not the course's own cells
                for f in asg.static_flags(cell["source"]):
                    flags.append(f"suspicious code: {f}")
                if g.get("role") == "answer":
                    test = a.test_of_answer.get(g["grade_id"], "")
                    hits = asg.reference_calls(cell["source"], a.answer_functions.get(g["grade_id"], set()),
                                               a.references.get(test, set()))
                    if hits:
                        flags.append(f"integrity: the answer `{g['grade_id']}` calls course_lib's reference "
                                     f"{', '.join('`' + h + '`' for h in hits)} instead of implementing it")
        with tempfile.TemporaryDirectory(prefix="grading-stage-") as tmp:
            os.chmod(tmp, 0o700)
            stage = Path(tmp) / "work"
            stage_files(a, folder if folder is not None and folder.is_dir() else None, stage, nb_path)
            run = execute(nb, stage, slot, limits, hide_extra=[str(a.source_path.parent.parent)])
        tests, tflags = score(a, nb, run)
        cell_errors = []
        for i, cell in enumerate(nb["cells"]):
            g = cell.get("metadata", {}).get("grader", {})
            r = run.cells.get(i)
            if g.get("role") in ("plain", "locked", "answer", "stub", "student") and r is not None and r.status != "ok":
                cell_errors.append(f"{g.get('role')} cell {i}: {r.ename}: {r.evalue[:200]}")
        flags = sorted(set(flags)) + tflags + resource_exhaustion(run, tests)
        status = "graded" if not run.problem else "incomplete"
        result = {"student": student, "assignment": a.name, "status": status,
                  "score": float(sum(t["score"] for t in tests.values())), "max_score": a.max_score,
                  "tests": tests, "flags": flags, "notes": notes, "problem": run.problem,
                  "seconds": round(time.monotonic() - t0, 2), "sandbox": run.sandbox, "cell_errors": cell_errors}
        return _finish(a, result, run.nb, out_dir, feedback_dir)
    except Exception as exc:  # the batch never stops for one submission
        result = _ungradable(a, student, f"internal grader error: {type(exc).__name__}: {exc}", notes,
                             time.monotonic() - t0)
        result["traceback"] = traceback.format_exc()[-3000:]
        return _finish(a, result, None, out_dir, feedback_dir)


def _finish(a, result, executed_nb, out_dir: Path, feedback_dir: Path | None) -> dict:
    from . import feedback

    result["needs_review"] = needs_review(result)
    if executed_nb is not None:
        (out_dir / f"{a.name}.ipynb").write_text(json.dumps(executed_nb, indent=1, ensure_ascii=False), encoding="utf-8")
    (out_dir / "result.json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    if feedback_dir is not None:
        try:
            feedback.write(a, result, executed_nb, feedback_dir / f"{a.name}.html")
        except Exception as exc:  # feedback must exist whatever happens
            feedback.write_plain(a, result, feedback_dir / f"{a.name}.html", f"(detailed feedback failed: {exc})")
    return result


# --------------------------------------------------------------------------- the class, in parallel

_SLOT = 0


def _init_worker(q):
    global _SLOT
    _SLOT = q.get()


def _work(args):
    name, root, folder, student, out_dir, fb_dir, limits = args
    a = asg.load(name, Path(root))
    return grade_submission(a, Path(folder) if folder else None, student, Path(out_dir), limits, _SLOT,
                            feedback_dir=Path(fb_dir) if fb_dir else None)


def grade_many(name: str, jobs: list[tuple[str, Path | None, Path, Path | None]], limits: Limits | None = None,
               workers: int | None = None, root: Path = asg.ROOT, progress=None) -> list[dict]:
    """Grade (student, folder, out_dir, feedback_dir) jobs; returns results in the order of ``jobs``."""
    limits = limits or Limits()
    workers = max(1, min(workers or default_workers(), len(jobs) or 1))
    args = [(name, str(root), str(f) if f else "", s, str(o), str(fb) if fb else "", limits) for s, f, o, fb in jobs]
    results: list[dict | None] = [None] * len(jobs)
    if workers == 1:
        for i, arg in enumerate(args):
            results[i] = _work(arg)
            if progress:
                progress(results[i])
        return results
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    for k in range(workers):
        q.put(k)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(q,)) as ex:
        futs = {ex.submit(_work, arg): i for i, arg in enumerate(args)}
        for fut in as_completed(futs):
            i = futs[fut]
            try:
                results[i] = fut.result()
            except Exception as exc:  # a worker process died: still a row, with the reason
                a = asg.load(name, root)
                results[i] = _ungradable(a, jobs[i][0], f"internal grader error: the worker died ({exc})", [])
            if progress:
                progress(results[i])
    return results


def default_workers() -> int:
    """Parallel kernels: one per core, bounded by memory (about 1.5 GB per kernel)."""
    cores = os.cpu_count() or 1
    try:
        import psutil
        mem = psutil.virtual_memory().available / 2**30
        return max(1, min(cores, int(mem // 1.5)))
    except Exception:
        return cores
