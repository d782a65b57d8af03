"""Test verdicts decided where the submission cannot forge them.

The notebook run in the Jupyter kernel (runner.execute) only makes the student's feedback:
it runs the visible tests, never a hidden one. The verdicts come from a second, fresh process
in the same sandbox (``verdict_main.py``, no kernel, no reply protocol): it runs the notebook's
cells, then each test, and writes one line per test, prefixed with a per-run random nonce, to a
pipe the grader opened before the process started. See verdict_main.py for why code in the
submission can neither reach the nonce nor make a failing test look passed.

If the process dies, hangs or a cell runs past its limit, the grader starts a fresh one that
skips what went wrong and goes on with the next test. A test that failed because the process ran
out of a resource (memory, processes, files) is re-run once more in a fresh process.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import unquote
from pathlib import Path

from . import assignment as asg
from . import integrity
from .runner import Limits, prepare_sandbox

MAIN = Path(__file__).resolve().parent / "verdict_main.py"
SNAPSHOT = Path(__file__).resolve().parent / "snapshot.py"  # the library guard, shared with guard.py
MAX_CHANNEL = 1 << 20


@dataclass
class Verdicts:
    tests: dict = field(default_factory=dict)      # test index -> {"status", "part", "ename", "retried"}
    cells: dict = field(default_factory=dict)      # step index -> status of a non-test step
    flags: list = field(default_factory=list)
    references: list = field(default_factory=list)  # (watched target, "step/qualname;...") the watch saw
    runs: int = 0
    seconds: float = 0.0
    problem: str = ""


def plan_steps(nb: dict, a: asg.Assignment) -> list[tuple[str, str, str]]:
    """(kind, key, source) for every code cell of the rebuilt notebook the grading run executes:
    the student's and the course's cells, and each test's visible then hidden part. Test keys are
    ``"<index>:<grade_id>"``; the grader's own kernel-side cells (guard, check, scrub) are left out."""
    index = {t.grade_id: k for k, t in enumerate(a.tests)}
    steps = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        g = cell.get("metadata", {}).get("grader", {})
        role = g.get("role")
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if role in ("guard", "check", "scrub", "hidden"):
            continue
        if role == "visible":
            k = index[g["grade_id"]]
            steps.append(("visible", f"{k}:{g['grade_id']}", src))
            if a.tests[k].hidden.strip():
                steps.append(("hidden", f"{k}:{g['grade_id']}", a.tests[k].hidden))
        else:
            steps.append(("cell", f"{i}:{role}", src))
    return steps


def _launch(steps, stage: Path, slot: int, limits: Limits, hide_extra, first: int, only, skip,
            data_dir=None, watch=()) -> tuple[list[list[str]], str, int, float]:
    """One grading process. Returns (verdict lines, nonce-less lines seen, exit code, seconds)."""
    t0 = time.monotonic()
    base, comm, spec_path, use_ns, _how = prepare_sandbox(stage, slot, limits, data_dir, hide_extra)
    nonce = secrets.token_hex(16)
    try:
        (comm / "verdict_main.py").write_text(SNAPSHOT.read_text(encoding="utf-8") + "\n\n" + MAIN.read_text(encoding="utf-8"),
                                              encoding="utf-8")
        os.chmod(comm / "verdict_main.py", 0o644)
        plan = {"nonce": nonce, "steps": steps, "cell_s": limits.cell_s, "first": first,
                "only": sorted(only) if only is not None else None, "skip": sorted(skip), "watch": list(watch)}
        (comm / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
        os.chmod(comm / "plan.json", 0o600)
        rfd, wfd = os.pipe()
        inner = [sys.executable, "-I", str(Path(__file__).resolve().parent / "sandbox.py"), str(spec_path), "--",
                 sys.executable, "-I", str(comm / "verdict_main.py"), str(comm / "plan.json"), str(wfd)]
        cmd = (["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", *inner]
               if use_ns else inner)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                pass_fds=(wfd,), start_new_session=True, cwd=str(comm), preexec_fn=_die_with_parent)
        os.close(wfd)
        chunks: list[bytes] = []
        size = [0]

        def drain():
            with os.fdopen(rfd, "rb", buffering=0) as r:
                while True:
                    b = r.read(65536)
                    if not b:
                        return
                    if size[0] < MAX_CHANNEL:
                        chunks.append(b)
                    size[0] += len(b)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        budget = limits.wall_s + 30
        try:
            rc = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc = -9
        reader.join(timeout=10)
        if reader.is_alive():  # something still holds the pipe open: the whole group goes
            _kill(proc)
            reader.join(timeout=5)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    good, forged = [], 0
    for line in text.splitlines():
        parts = line.split(" ")
        if parts and secrets.compare_digest(parts[0], nonce):
            good.append(parts[1:])
        elif line.strip():
            forged += 1
    if size[0] > MAX_CHANNEL:
        forged += 1
    return good, forged, rc, time.monotonic() - t0


def _die_with_parent():
    """In the child, before exec: SIGKILL when the grader dies (unshare then kills the sandbox)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except Exception:
        pass


def decide(a: asg.Assignment, nb: dict, stage: Path, slot: int, limits: Limits, hide_extra=None,
           data_dir=None) -> Verdicts:
    """Every test's verdict for the rebuilt notebook ``nb`` (see the module's docstring)."""
    steps = plan_steps(nb, a)
    try:
        watch = a.exercises.watch(integrity.course_index())
    except Exception:
        watch = []
    v = Verdicts()
    t0 = time.monotonic()
    n = len(a.tests)
    first, skip = 0, set()
    flags: list[str] = []
    deadline = t0 + max(limits.wall_s * 2, 60)

    def one(first, only, skip):
        lines, forged, rc, secs = _launch(steps, stage, slot, limits, hide_extra, first, only, skip, data_dir, watch)
        lines = [p for p in lines if p]
        v.runs += 1
        for p in lines:  # the references' watch (verdict_main.py, 5.)
            if p[0] == "REF" and len(p) >= 3 and len(v.references) < 500:
                rec = (unquote(p[1])[:300], unquote(p[2])[:2000])
                if rec not in v.references:
                    v.references.append(rec)
            elif p[0] == "WATCH" and len(p) >= 2:
                flags.append("tampering: the grading run's watch on the exercises' references was disturbed, and "
                             f"put back: {unquote(p[1])[:300]}")
        if forged:
            flags.append(f"tampering: {forged} line(s) on the grading run's verdict channel were not written by "
                         "the grader (an attempt to forge a verdict): they were ignored")
        return lines, rc

    def finished(k):
        t = v.tests.get(k)
        return t is not None and (t["status"] != "ok" or t["part"] == "hidden" or not a.tests[k].hidden.strip())

    while first < n and time.monotonic() < deadline and v.runs < n + 6:
        lines, rc = one(first, None, skip)
        started = ended = False
        timed_out_step, began = None, []
        for p in lines:
            if p[0] == "START":
                started = True
            elif p[0] == "S" and len(p) >= 4:
                v.cells[int(p[1])] = p[2] if p[2] != "error" else f"error:{p[3]}"
                if p[2] == "timeout":
                    timed_out_step = int(p[1])
            elif p[0] == "B" and len(p) >= 4:
                k = int(p[1])
                began.append(k)
                if p[2] == "guard":
                    flags.append(f"tampering: before `{a.tests[k].grade_id}` the grader restored "
                                 + unquote(p[3])[:300])
            elif p[0] == "TAMPER" and len(p) >= 3:
                flags.append(f"tampering: while `{a.tests[int(p[1])].grade_id}` ran, the submission replaced "
                             + unquote(p[2])[:300] + " (so it does not count as passed)")
            elif p[0] == "E" and len(p) >= 5:
                k, part, status, ename = int(p[1]), p[2], p[3], p[4]
                resource = ename.endswith("!R")
                ename = ename[:-2] if resource else ename
                v.tests[k] = {"status": status, "part": part, "ename": ename if ename.isidentifier() else "-",
                              "resource": resource or ename in ("MemoryError", "BlockingIOError")}
            elif p[0] == "REFUSED" and len(p) >= 2:
                flags.append(f"tampering: the grading run refused `{unquote(p[1])[:120]}` "
                             "(hooks, frame or memory access, processes)")
            elif p[0] == "END":
                ended = True
        if not started:
            v.problem = "the grading process did not start (see the sandbox)"
            break
        if ended:
            break
        # it stopped early: skip what stopped it and start a fresh one
        if timed_out_step is not None:
            skip.add(timed_out_step)
            continue
        if began and not finished(began[-1]):
            k = began[-1]
            v.tests[k] = {"status": "died", "part": v.tests.get(k, {}).get("part", "visible"), "ename": "-"}
        if began:
            first = max(began) + 1
            continue
        seen = [int(p[1]) for p in lines if p[0] == "S"]
        last = max(seen) if seen else -1
        nxt = next((i for i in range(last + 1, len(steps)) if steps[i][0] == "cell" and i not in skip), None)
        if nxt is None:
            v.problem = "the grading process stopped before the first test"
            break
        skip.add(nxt)
    # a test that failed for lack of a resource: once more in a fresh process
    again = sorted(k for k, t in v.tests.items() if t["status"] == "died" or
                   (t["status"] == "error" and t.get("resource")))
    if again and time.monotonic() < deadline:
        lines, rc = one(0, set(again), skip)
        for p in lines:
            if p[0] == "E" and len(p) >= 5 and int(p[1]) in again:
                k, part, status = int(p[1]), p[2], p[3]
                if v.tests[k].get("retry") not in (None, "ok"):
                    continue  # the visible part failed already
                v.tests[k]["retry"] = status if (status != "ok" or part == "hidden" or
                                                 not a.tests[k].hidden.strip()) else "visible ok"
        for k in again:
            t = v.tests[k]
            before = f"{t['status']}{' (' + t['ename'] + ')' if t['ename'] != '-' else ''}"
            flags.append(f"resources: `{a.tests[k].grade_id}` failed in the grading run ({before}: out of memory, "
                         f"processes or time?); re-run once in a fresh process: "
                         f"{t.get('retry', 'did not finish').replace('visible ok', 'did not finish')}: review it")
            if t.get("retry") == "ok":
                t.update(status="ok", part="hidden" if a.tests[k].hidden.strip() else "visible")
    try:
        flags += integrity.dynamic_flags(a, nb, steps, v.references)
    except Exception as exc:  # never a reason not to grade
        flags.append(f"integrity: the grading run's records could not be read ({type(exc).__name__}): review them")
    v.flags = list(dict.fromkeys(flags))
    v.seconds = time.monotonic() - t0
    return v
