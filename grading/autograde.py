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
from . import integrity
from . import verdict
from .runner import Limits, execute

MAX_NOTEBOOK_MB = 50
SKIP_FILES = {".ipynb_checkpoints", "__pycache__"}


def _changed_cells(path: Path, release_sources: set) -> int:
    """How many code cells of the notebook at ``path`` differ from every code cell of the release
    (the student's work); -1 when it cannot be read as a notebook."""
    nb, _ = read_notebook(path)
    if nb is None:
        return -1
    n = 0
    for c in nb["cells"]:
        if isinstance(c, dict) and c.get("cell_type") == "code":
            src = asg._norm(asg._src(c))
            if src and src not in release_sources:
                n += 1
    return n


def find_notebook(folder: Path, name: str, a: asg.Assignment | None = None) -> tuple[Path | None, list[str], list[str]]:
    """The submitted notebook, with notes (for the student and the grade sheet) and flags (for review).

    One notebook: that one (renamed or not). Several: the one holding the student's work, i.e.
    whose code differs from the release; if several hold work, the newest of them (flagged as
    ambiguous); if none does, ``<name>.ipynb`` or else the newest."""
    notes: list[str] = []
    flags: list[str] = []
    nbs = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file())
    exact = folder / f"{name}.ipynb"
    if not nbs:
        return None, notes, flags
    if len(nbs) == 1:
        if nbs[0] != exact:
            notes.append(f"the notebook was renamed to `{nbs[0].name}`; graded as `{name}.ipynb`")
        return nbs[0], notes, flags
    names = ", ".join(f"`{p.relative_to(folder)}`" for p in nbs)
    release_sources: set = set()
    if a is not None:
        rel = json.loads(a.release_path.read_text(encoding="utf-8"))
        release_sources = {asg._norm(asg._src(c)) for c in rel["cells"] if c.get("cell_type") == "code"}
    work = {p: _changed_cells(p, release_sources) for p in nbs}
    newest = lambda ps: max(ps, key=lambda p: (p.stat().st_mtime, p.name))  # noqa: E731
    with_work = [p for p in nbs if work[p] > 0]
    if len(with_work) == 1:
        best = with_work[0]
        notes.append(f"{len(nbs)} notebooks were handed in ({names}); graded `{best.relative_to(folder)}`, the only "
                     "one with answers that differ from the release")
    elif with_work:
        best = newest(with_work)
        notes.append(f"{len(nbs)} notebooks were handed in ({names}); {len(with_work)} hold work; graded the newest, "
                     f"`{best.relative_to(folder)}`")
        flags.append(f"submission: {len(with_work)} notebooks hold work ({names}); graded the newest, "
                     f"`{best.relative_to(folder)}`: check it is the right one")
    else:
        readable = [p for p in nbs if work[p] >= 0] or nbs
        best = exact if exact in readable else newest(readable)
        notes.append(f"{len(nbs)} notebooks were handed in ({names}), none with answers that differ from the "
                     f"release; graded `{best.relative_to(folder)}`")
    return best, notes, flags


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


def _builtin_name(ename: str) -> str:
    """An exception name from the grading run, shown only when it is one of Python's own."""
    import builtins
    return ename if isinstance(getattr(builtins, ename, None), type) else ""


def score(a: asg.Assignment, nb: dict, run, verdicts) -> tuple[dict, list[str]]:
    """Per-test outcome. The verdict (points) comes from the grading run (verdict.decide), which the
    submission cannot forge; the reason shown to the student comes from its own feedback run (the
    kernel's reply to the visible test), never from the grading run, where hidden tests ran."""
    tests = {t.grade_id: {"points": t.points, "score": 0.0, "passed": False, "reason": "not run"} for t in a.tests}
    flags = []
    by_gid: dict[str, dict] = {}
    for i, cell in enumerate(nb["cells"]):
        g = cell.get("metadata", {}).get("grader", {})
        if g.get("role") in ("check", "visible"):
            by_gid.setdefault(g["grade_id"], {})[g["role"]] = run.cells.get(i)
        if g.get("role") == "guard":
            r = run.cells.get(i)
            if r is not None and r.status != "ok":
                flags.append(f"tampering: the grader's setup failed ({r.ename}: {r.evalue[:200]})")
    for k, t in enumerate(a.tests):
        res = by_gid.get(t.grade_id, {})
        chk, vis = res.get("check"), res.get("visible")
        out = tests[t.grade_id]
        if chk is not None and chk.status == "error":
            if chk.ename == "__GraderTampering" or "GraderTampering" in chk.ename:
                flags.append(f"tampering: {chk.evalue[:300]}")
            else:
                flags.append(f"tampering: the grader's check before `{t.grade_id}` failed ({chk.ename})")
        v = verdicts.tests.get(k)
        has_hidden = bool(t.hidden.strip())
        if v is not None and v["status"] == "ok" and (v["part"] == "hidden" or not has_hidden):
            out.update(score=t.points, passed=True, reason="")
            if vis is not None and vis.status not in ("ok", "not run"):
                flags.append(f"verdict: `{t.grade_id}` passed in the grading run but failed in the feedback run "
                             f"({vis.ename}): not deterministic? review it")
            continue
        name = _builtin_name(v["ename"]) if v else ""
        if v is None:
            out["reason"] = "not run (the grading run stopped before this test)"
        elif v["status"] == "timeout":
            out["reason"] = "the test ran past the time limit (an endless loop?)"
        elif v["status"] == "died":
            out["reason"] = "the process ended during this test (it exited or was killed)"
        elif v["status"] == "tampered":
            out["reason"] = "the submission replaced library functions while this test ran"
        elif v["part"] == "hidden":
            out["reason"] = f"hidden tests failed{f' ({name})' if name in RESOURCE_ENAMES else ''}"
            out["hidden_failed"] = True
        elif vis is not None and vis.status == "error":
            out["reason"] = f"{vis.ename}: {vis.evalue}".strip()[:500]
        elif vis is not None and vis.status == "timeout":
            out["reason"] = "the test ran past the time limit (an endless loop?)"
        else:
            out["reason"] = f"failed when graded{f' ({name})' if name else ''}"
        if v is not None and v["part"] == "visible" and v["status"] in ("error", "tampered") and vis is not None \
                and vis.status == "ok":
            flags.append(f"verdict: `{t.grade_id}` failed in the grading run but its visible part reported success "
                         "in the feedback run (the kernel's replies altered?): review it")
    return tests, flags


RESOURCE_ENAMES = {"MemoryError", "BlockingIOError", "RecursionError"}


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
    pick_flags: list[str] = []
    try:
        if nb_path is None:
            if folder is None or not folder.is_dir():
                result = _ungradable(a, student, "no submission folder", notes)
                return _finish(a, result, None, out_dir, feedback_dir)
            nb_path, notes, pick_flags = find_notebook(folder, a.name, a)
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
        # an answer that reaches the reference of the very function it should write (by name, alias,
        # attribute, getattr, import); the grading run watches the calls too (verdict.decide)
        try:
            flags += integrity.static_flags(a, nb)
        except Exception as exc:  # never a reason not to grade
            flags.append(f"integrity: the static check could not read the submission ({type(exc).__name__}): "
                         "review the answers by hand")
        with tempfile.TemporaryDirectory(prefix="grading-stage-") as tmp:
            os.chmod(tmp, 0o700)
            stage = Path(tmp) / "work"
            stage_files(a, folder if folder is not None and folder.is_dir() else None, stage, nb_path)
            hide = [str(a.source_path.parent.parent)]
            # the feedback run: the student's notebook with the visible tests only (no hidden test
            # ever runs where its output could reach the student)
            fb_nb = dict(nb, cells=[c for c in nb["cells"]
                                    if c.get("metadata", {}).get("grader", {}).get("role") not in ("hidden", "scrub")])
            run = execute(fb_nb, stage, slot, limits, hide_extra=hide)
            # the verdicts: a fresh process the submission does not control (verdict.py)
            verdicts = verdict.decide(a, nb, stage, slot, limits, hide_extra=hide)
        tests, tflags = score(a, fb_nb, run, verdicts)
        tflags += verdicts.flags
        cell_errors = []
        for i, cell in enumerate(fb_nb["cells"]):  # run.cells is indexed by the feedback run's cells
            g = cell.get("metadata", {}).get("grader", {})
            r = run.cells.get(i)
            if g.get("role") in ("plain", "locked", "answer", "stub", "student") and r is not None and r.status != "ok":
                cell_errors.append(f"{g.get('role')} cell {i}: {r.ename}: {r.evalue[:200]}")
        env_flags = [f"environment: a cell the student did not write failed ({e}): the grading environment "
                     "(or the course's own code) is at fault, not the student: review it"
                     for e in cell_errors if e.startswith(("plain ", "locked "))][:3]
        flags = pick_flags + env_flags + sorted(set(flags)) + tflags + resource_exhaustion(run, tests)
        problem = run.problem or (f"grading run: {verdicts.problem}" if verdicts.problem else "")
        status = "graded" if not problem else "incomplete"
        result = {"student": student, "assignment": a.name, "status": status,
                  "score": float(sum(t["score"] for t in tests.values())), "max_score": a.max_score,
                  "tests": tests, "flags": flags, "notes": notes, "problem": problem,
                  "seconds": round(time.monotonic() - t0, 2), "sandbox": run.sandbox, "cell_errors": cell_errors,
                  "notebook": str(nb_path.relative_to(folder)) if folder is not None and nb_path.is_relative_to(folder)
                  else nb_path.name,
                  "grading_run": {"runs": verdicts.runs, "seconds": round(verdicts.seconds, 2),
                                  "problem": verdicts.problem,
                                  "tests": {a.tests[k].grade_id: t for k, t in verdicts.tests.items()}}}
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


class CanaryFailed(RuntimeError):
    """The reference solution does not get full marks in the grading sandbox: grading the class
    would zero correct work, so nothing is graded."""


def canary(name: str, limits: Limits | None = None, root: Path = asg.ROOT) -> dict:
    """Grade the reference solution (solutions/<name>/<name>.ipynb) exactly as a student's
    submission; raise CanaryFailed, saying why and how to fix it, unless it gets full marks."""
    a = asg.load(name, root)
    with tempfile.TemporaryDirectory(prefix="grading-canary-") as tmp:
        folder = Path(tmp) / "submitted"
        folder.mkdir()
        shutil.copy2(a.source_path, folder / f"{name}.ipynb")
        r = grade_submission(a, folder, "reference-solution", Path(tmp) / "out", limits or Limits(), slot=0)
    if r["status"] == "graded" and r["score"] == r["max_score"]:
        return r
    lines = [f"The reference solution of {name} scored {r['score']} / {r['max_score']} ({r['status']}) in the "
             "grading sandbox, so every student would lose points that are not theirs to lose. Nothing was graded."]
    if r.get("problem"):
        lines.append(f"  why: {r['problem']}")
    for e in r.get("cell_errors", [])[:5]:
        lines.append(f"  a cell failed: {e}")
    for gid, t in r.get("tests", {}).items():
        if not t.get("passed"):
            lines.append(f"  test {gid}: {t.get('reason')}")
    for f in r.get("flags", [])[:5]:
        lines.append(f"  flag: {f}")
    import sys as _sys
    lines.append("How to fix: the sandbox covers /tmp, /root, /home, solutions/, grading/, tests/ and the course folder; "
                 f"the course's Python ({_sys.prefix}), course_lib and the data folder (COURSE_DATA_DIR="
                 f"{os.environ.get('COURSE_DATA_DIR', '(default cache)')}) must be readable from outside those, "
                 f"the data fetched (`python -m grading setup {name}`), and the limits (--memory-mb, --cell-s, "
                 "--wall-s) large enough. Check with `python -c \"from grading.api import grade_reference; "
                 f"print(grade_reference('{name}'))\"`, then grade again.")
    raise CanaryFailed("\n".join(lines))


def grade_many(name: str, jobs: list[tuple[str, Path | None, Path, Path | None]], limits: Limits | None = None,
               workers: int | None = None, root: Path = asg.ROOT, progress=None, check_reference: bool = True) -> list[dict]:
    """Grade (student, folder, out_dir, feedback_dir) jobs; returns results in the order of ``jobs``.
    First the reference solution is graded the same way (``canary``): if it does not get full
    marks, CanaryFailed is raised and nothing is graded."""
    limits = limits or Limits()
    if check_reference and jobs:
        canary(name, limits, root)
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
