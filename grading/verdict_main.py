"""The grading run: decides every test's verdict in a fresh sandboxed interpreter.

    python -I verdict_main.py PLAN.json OUT_FD

Started by grading/verdict.py, inside the same sandbox as the student's kernel, but with
no Jupyter kernel, no IPython display or traceback path and no reply protocol in the
verdict's way. It must not import anything of the grader (grading/ is hidden in the
sandbox). What it does, in order:

1. Before any student code: installs an audit hook (it refuses, and records, every later
   audit hook, tracer and profiler, frame and object-graph walking, ctypes access to the
   interpreter or to raw memory, reading /proc/*/mem or another file descriptor through
   /proc); makes the process non-dumpable (no other process of the
   same user can read its memory); reads the plan, then deletes it; snapshots the libraries
   the tests rely on.
2. Runs the notebook's cells in order (the student's answers and own cells, the course's
   cells, the visible part of every test), then each test: the guard restores anything the
   student replaced, the visible part runs in the notebook's namespace and the hidden part in
   a copy of it.
3. **How a verdict is decided.** Every piece of code of the notebook runs in a thread of its
   own, started with ``_thread.start_new_thread(deque, (map(call, [exec(code), ok.release]), 0))``:
   ``ok.release`` is called by C code only after ``exec`` returned normally. No Python frame
   of the grader is on that thread's stack, and the ``ok`` lock is referenced only from the
   main thread's frame (unreachable: ``sys._current_frames``, ``gc`` walking and frame
   access from the main thread are refused) and from that C-level iterator. A test passes
   only when ``ok`` was released; an exception, ``sys.exit``, ``os._exit``, a killed process
   or a timeout all leave it held. Student code never runs in the main thread except in an
   object finalizer, where frame access is refused.
4. Verdicts go to a pipe whose write end the grader opened before the process started; every
   line carries a per-run random nonce that only the main thread holds, so text written by
   the submission cannot pass for a verdict (the grader flags any line without it).
5. **The references' watch** (integrity, see grading/integrity.py). Before any cell runs, every
   function the plan names (``watch``: each exercise's course_lib reference, and functions the
   notebook's own cells define, wrapped once their cell ran) is replaced, wherever course_lib
   holds it, by a wrapper that looks at its calling frame: when that frame is code the student
   wrote (not a file, not the course's or a test's cell), the wrapper raises the audit event
   ``grader.reference`` with the code objects of the stack; the audit hook (unreachable from
   the submission) keeps them, and the main thread reports them (``REF``) after each step, with
   the step and name of each frame of student code. After every step the main thread checks that
   every wrapper is still in place and intact (not unwrapped, replaced, its code or closure
   changed) and that no watched module's code ran again (a reload, a second copy): it puts
   things back and reports what it found (``WATCH``). None of this changes a verdict.
"""
import sys

MAIN_ARGS = sys.argv[1:]

try:  # grading/verdict.py puts grading/snapshot.py first in this file's sandbox copy (-I: no imports of grading/)
    snapshot
except NameError:
    from grading.snapshot import snapshot


def _watched(orig, key, audit, getframe):
    """A wrapper of the reference ``orig``: a call from code that is not in a file (a notebook cell,
    code compiled at run time) raises the audit event ``grader.reference`` with the stack's code
    objects of that kind, innermost first; the grading run's audit hook decides what it was."""

    def watched(*args, **kwargs):
        try:
            f = getframe(1)
            if not f.f_code.co_filename.startswith(("/", "<frozen")):
                codes = []
                while f is not None and len(codes) < 24:
                    c = f.f_code
                    if not c.co_filename.startswith(("/", "<frozen")):
                        codes.append(c)
                    f = f.f_back
                audit("grader.reference", key, tuple(codes))
        except Exception:
            pass
        return orig(*args, **kwargs)

    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        try:
            setattr(watched, attr, getattr(orig, attr))
        except Exception:
            pass
    try:
        watched.__dict__.update(orig.__dict__)
    except Exception:
        pass
    return watched


def main():  # noqa: C901 - one function on purpose: its locals are out of the submission's reach
    import _thread
    import os

    from types import CodeType

    refused = []
    state = {"armed": False}
    refs, ref_seen, reloads = [], set(), []   # what the references' watch saw (see 5. above)
    code_info = {}                            # id(code object) -> (step, compiled by the course or a test?)
    watched_keys, watched_files = set(), set()

    def note_reference(args):
        key, codes = args
        if type(key) is not str or key not in watched_keys or type(codes) is not tuple or not codes:
            return
        frames = []
        for c in codes[:24]:
            if type(c) is not CodeType:
                return
            info = code_info.get(id(c))
            if info is not None and info[1] and not frames:
                return  # called by the course's own code or by a test
            name = "".join(ch if ch.isalnum() or ch in "_.<>" else "_" for ch in str(c.co_qualname)[:80])
            frames.append(f"{info[0] if info is not None else -1}/{name}")
        rec = (key, ";".join(frames))
        if rec not in ref_seen and len(refs) < 200:
            ref_seen.add(rec)
            refs.append(rec)
    main_ident = _thread.get_ident()
    realpath = os.path.realpath
    FRAME_ATTRS = ("tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "gi_code", "cr_code", "ag_code")
    DENY = {"sys.addaudithook", "sys.settrace", "sys.setprofile", "sys._current_frames", "gc.get_objects",
            "gc.get_referrers", "gc.get_referents", "ctypes.cdata", "ctypes.cdata/buffer", "ctypes.string_at",
            "ctypes.wstring_at", "ctypes.call_function", "ctypes.addressof",
            "sys.monitoring.register_callback", "sys.monitoring.set_events"}
    import re
    secret_proc = re.compile(r"^/proc/(\d+|self|thread-self)/(task/\d+/)?(fd|fdinfo|mem|map_files|environ|pagemap)(/|$)")

    def hook(event, args):
        if event == "sys.addaudithook":
            refused.append(event)
            raise RuntimeError("grader: no audit hooks")
        if not state["armed"]:
            return
        if event == "grader.reference":
            try:
                note_reference(args)
            except Exception:
                pass
            return
        if event == "exec":
            try:
                if watched_files and args and type(args[0]) is CodeType and args[0].co_filename in watched_files:
                    reloads.append(args[0].co_filename)
            except Exception:
                pass
            return
        why = ""
        if event in DENY:
            why = event
        elif event == "ctypes.dlsym":
            name = str(args[1]) if len(args) > 1 else ""
            if name.lstrip("_").startswith("Py"):
                # refused without a flag: libraries look such symbols up when imported (fsspec) and
                # fall back; calling any of them would need ctypes.call_function, refused and flagged
                raise PermissionError(f"grader: ctypes.dlsym {name} is not allowed while grading")
        elif event == "ctypes.dlopen" and (not args or args[0] is None):
            why = "ctypes.dlopen of the interpreter"
        elif event == "open" and args and isinstance(args[0], (str, bytes)):
            p = args[0].decode(errors="replace") if isinstance(args[0], bytes) else args[0]
            try:
                rp = realpath(p)
            except Exception:
                rp = p
            if (rp.startswith(("pipe:", "socket:", "anon_inode:")) or "pipe:[" in rp or rp.startswith("/dev/fd")
                    or secret_proc.match(rp) or secret_proc.match(p)):
                why = f"open {p}"
        elif _thread.get_ident() == main_ident and (
                event == "sys._getframe" or (event == "object.__getattr__" and len(args) > 1
                                             and args[1] in FRAME_ATTRS)):
            why = f"{event} from a finalizer in the grader's thread"
        if why:
            refused.append(why)
            raise PermissionError(f"grader: {why} is not allowed while grading")

    sys.addaudithook(hook)
    try:
        import ctypes
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    except Exception:
        pass
    import json
    import signal
    import time
    from collections import deque
    from functools import partial
    from operator import call
    from urllib.parse import quote

    plan_path, out_fd = MAIN_ARGS[0], int(MAIN_ARGS[1])
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    for p in (plan_path, os.path.abspath(__file__)):
        try:
            os.unlink(p)
        except OSError:
            pass
    nonce = plan.pop("nonce")
    steps = plan.pop("steps")
    cell_s = float(plan.get("cell_s", 120))
    first, only, skip = plan.get("first", 0), plan.get("only"), set(plan.get("skip", []))
    watch = list(plan.get("watch") or [])
    del plan
    import weakref

    os_write, monotonic, weakref_ref = os.write, time.monotonic, weakref.ref
    start_thread, allocate_lock = _thread.start_new_thread, _thread.allocate_lock

    def emit(*parts):
        try:
            os_write(out_fd, (" ".join([nonce, *map(str, parts)]) + "\n").encode())
        except OSError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except Exception:
            pass
    sys.stdin = open(os.devnull)

    # the notebook's namespace: IPython's shell only serves magics (%pip, %%time) and display();
    # nothing it returns or prints is ever read
    from IPython.core.inputtransformer2 import TransformerManager
    from IPython.core.interactiveshell import InteractiveShell

    from traitlets.config import Config

    cfg = Config()
    cfg.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=cfg)
    ns = shell.user_ns
    transform = TransformerManager().transform_cell
    codes = []
    for kind, key, src in steps:
        try:
            codes.append(compile(transform(src), f"<{kind} {key}>", "exec"))
        except SyntaxError as exc:
            codes.append(exc)
    for i, (kind, key, _src) in enumerate(steps):
        if isinstance(codes[i], SyntaxError):
            continue
        trusted = kind in ("visible", "hidden") or key.split(":", 1)[-1] in ("plain", "locked")
        todo = [codes[i]]
        while todo:
            c = todo.pop()
            code_info[id(c)] = (i, trusted)
            todo.extend(x for x in c.co_consts if type(x) is CodeType)

    # the references' watch (5. above): wrap every watched course_lib function wherever course_lib holds it
    import importlib
    import pkgutil

    audit, getframe = sys.audit, sys._getframe
    FunctionType = type(main)
    installed, wrappers, nb_watch, nb_installed = [], [], {}, {}

    def wrap(fn, key):
        w = _watched(fn, key, audit, getframe)
        try:
            import inspect
            w.__signature__ = inspect.signature(fn)
        except Exception:
            pass
        wrappers.append((w, w.__code__, [c.cell_contents for c in w.__closure__], key))
        return w

    if watch:
        try:
            import course_lib
            for m in pkgutil.walk_packages(course_lib.__path__, "course_lib."):
                if ".demos" not in m.name:
                    try:
                        importlib.import_module(m.name)
                    except Exception:
                        pass
        except Exception:
            pass
    for target in watch:
        if target.startswith("nb:"):
            nb_watch[target[3:]] = target
            watched_keys.add(target)
            continue
        mod, _, qual = target.partition(":")
        try:
            holder = importlib.import_module(mod)
            parts = qual.split(".")
            for part in parts[:-1]:
                holder = getattr(holder, part)
            raw = vars(holder).get(parts[-1])
        except Exception:
            continue
        kind = staticmethod if isinstance(raw, staticmethod) else classmethod if isinstance(raw, classmethod) else None
        fn = raw.__func__ if kind else raw
        if type(fn) is not FunctionType:
            continue  # a class or a C or decorated callable: the static check covers it
        w = wrap(fn, target)
        obj = kind(w) if kind else w
        watched_keys.add(target)
        watched_files.add(getattr(getattr(fn, "__code__", None), "co_filename", None) or "")
        if isinstance(holder, type):
            try:
                type.__setattr__(holder, parts[-1], obj)
                installed.append((holder, parts[-1], obj, fn))
            except Exception:
                pass
            continue
        for name, m in list(sys.modules.items()):
            if m is not None and (name == "course_lib" or name.startswith("course_lib.")):
                d = vars(m)
                for k, v in list(d.items()):
                    if v is fn:
                        d[k] = obj
                        installed.append((m, k, obj, fn))
    watched_files.discard("")

    def watch_check():
        """Wrappers still in place and intact? Put back what is not, and say what it was."""
        out = []
        for holder, attr, obj, fn in installed:
            cur = vars(holder).get(attr)
            if cur is not obj:
                how = "unwrapped" if getattr(cur, "__func__", cur) is fn else ("removed" if cur is None else "replaced")
                try:
                    (type.__setattr__ if isinstance(holder, type) else setattr)(holder, attr, obj)
                except Exception:
                    pass
                out.append(f"{getattr(holder, '__name__', '?')}.{attr} ({how})")
        for name, (w, fn) in nb_installed.items():
            if ns.get(name) is fn:
                ns[name] = w
                out.append(f"the notebook's {name} (unwrapped)")
        for w, code0, cells0, key in wrappers:
            bad = w.__code__ is not code0 or w.__defaults__ is not None or w.__kwdefaults__ is not None
            for c, v in zip(w.__closure__ or (), cells0):
                try:
                    bad = bad or c.cell_contents is not v
                except ValueError:
                    bad = True
            if bad:
                try:
                    w.__code__, w.__defaults__, w.__kwdefaults__ = code0, None, None
                    for c, v in zip(w.__closure__ or (), cells0):
                        c.cell_contents = v
                except Exception:
                    pass
                out.append(f"the wrapper of {key.replace(':', '.')} (altered)")
        for name, key in nb_watch.items():  # the notebook's own reference, once its cell has run
            v = ns.get(name)
            if name not in nb_installed or (v is not nb_installed[name][0] and v is not nb_installed[name][1]):
                if type(v) is FunctionType and code_info.get(id(v.__code__), (0, False))[1]:
                    w = wrap(v, key)
                    ns[name] = w
                    nb_installed[name] = (w, v)
        while reloads:
            out.append(f"{reloads.pop(0)} ran again (a reloaded module, or a second copy of it)")
        return out

    sent = [0]

    def report():
        for what in watch_check():
            emit("WATCH", quote(what[:300], safe=""))
        while sent[0] < len(refs):
            key, frames = refs[sent[0]]
            sent[0] += 1
            emit("REF", quote(key, safe=""), quote(frames, safe=""))

    check = snapshot(ns, shell, system=True)
    errors = []

    signs = ("memoryerror", "can't allocate memory", "cannot allocate memory", "could not create a primitive",
             "out of memory", "bad_alloc", "defaultcpuallocator", "resource temporarily unavailable",
             "can't start new thread", "too many open files", "no space left on device", "file too large")

    def unraisable(u):  # only a hint (what failed, and whether a resource ran out); never a verdict
        try:
            name = type(u.exc_value).__name__
            text = (name + ": " + str(u.exc_value)[:2000]).lower()
            errors.append(name.replace(" ", "_")[:60] + ("!R" if any(s in text for s in signs) else ""))
        except Exception:
            errors.append("error")

    def run(code, glb):
        """'ok', 'error' or 'timeout'. ok only if the C-level iterator released the lock."""
        if isinstance(code, SyntaxError):
            errors.append("SyntaxError")
            return "error"
        ok = allocate_lock()
        ok.acquire()
        sys.unraisablehook = unraisable
        item = partial(exec, code, glb)
        alive = weakref_ref(item)  # dies with the thread (only the thread's C bootstrap holds the iterator)
        start_thread(deque, (map(call, [item, ok.release]), 0))
        del item
        deadline = monotonic() + cell_s
        while monotonic() < deadline:
            if ok.acquire(timeout=0.05):
                return "ok"
            if alive() is None:  # the thread ended without releasing the lock
                return "ok" if ok.acquire(timeout=0.2) else "error"
        return "timeout"

    visible_ok = {}
    state["armed"] = True
    emit("START")
    for i, (kind, key, _src) in enumerate(steps):
        code = codes[i]
        if i in skip:
            continue
        test = kind in ("visible", "hidden")
        k = int(key.split(":")[0]) if test else -1
        counted = test and k >= first and (only is None or k in only)
        if kind == "hidden" and (not counted or visible_ok.get(k) != "ok"):
            continue
        if kind == "visible" and counted:
            fixed = check()
            emit("B", k, "guard" if fixed else "-", quote(", ".join(fixed)[:2000], safe=""))
        if not counted:
            del errors[:]
            status = run(code, ns)
            report()
            emit("S", i, status, (errors[-1] if errors else "-")[:80])
            if status == "timeout":
                emit("EXIT", "timeout")
                os._exit(3)
            continue
        del errors[:]
        status = run(code, ns if kind == "visible" else dict(ns))
        report()
        after = check()
        if after:
            emit("TAMPER", k, quote(", ".join(after)[:2000], safe=""))
            if status == "ok":
                status = "tampered"
        if kind == "visible":
            visible_ok[k] = status
        emit("E", k, kind, status, (errors[-1] if errors else "-")[:80])
        if status == "timeout":
            emit("EXIT", "timeout")
            os._exit(3)
    report()
    for r in sorted(set(refused))[:50]:
        emit("REFUSED", quote(r[:300], safe=""))
    emit("END")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
