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
"""
import sys

MAIN_ARGS = sys.argv[1:]


def main():  # noqa: C901 - one function on purpose: its locals are out of the submission's reach
    import _thread
    import os

    refused = []
    state = {"armed": False}
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
    check = _snapshot(ns, shell)
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
            emit("S", i, status, (errors[-1] if errors else "-")[:80])
            if status == "timeout":
                emit("EXIT", "timeout")
                os._exit(3)
            continue
        del errors[:]
        status = run(code, ns if kind == "visible" else dict(ns))
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
    for r in sorted(set(refused))[:50]:
        emit("REFUSED", quote(r[:300], safe=""))
    emit("END")
    sys.stdout.flush()
    os._exit(0)


def _snapshot(ns, shell):
    """Copies of the libraries the tests rely on; check() puts back what was replaced and names it."""
    import builtins
    import importlib
    import pkgutil

    names = ["builtins", "math", "operator", "functools", "numpy", "numpy.testing", "numpy.linalg",
             "numpy.random", "pandas", "pandas.testing", "torch", "torch.nn", "torch.nn.functional",
             "torch.testing", "scipy.sparse", "course_lib", "sys", "threading", "_thread", "os", "gc"]
    try:
        import course_lib
        names += [m.name for m in pkgutil.walk_packages(course_lib.__path__, "course_lib.")
                  if ".demos" not in m.name]
    except Exception:
        pass
    mods = {}
    for n in names:
        try:
            m = importlib.import_module(n)
        except Exception:
            continue
        mods[n] = (m, dict(vars(m)))
    classes = []
    for dotted in ["torch.Tensor", "pandas.DataFrame", "pandas.Series", "pandas.Index", "numpy.ndarray"]:
        mod, _, attr = dotted.rpartition(".")
        if mod in mods and hasattr(mods[mod][0], attr):
            classes.append(getattr(mods[mod][0], attr))
    classes += [c for c in type(shell).__mro__ if c.__module__.startswith("IPython")]
    klass = {c: dict(vars(c)) for c in classes}
    shell_attrs = {k: v for k, v in vars(shell).items() if callable(v)}
    builtin_names = set(vars(builtins))
    builtin_vals = dict(vars(builtins))
    aliases = {"np": "numpy", "pd": "pandas", "torch": "torch", "cl": "course_lib", "math": "math"}
    trusted = ("torch", "numpy", "pandas", "scipy", "course_lib", "IPython", "ipykernel", "matplotlib",
               "sklearn", "transformers")
    volatile = {"input", "raw_input", "getpass", "open", "get_ipython", "display", "exit", "quit", "_", "__",
                "___", "In", "Out", "_ih", "_oh", "_dh", "_i", "_ii", "_iii"}
    ns_shadows = {k for k in ns if k in builtin_names}
    sys_ = sys
    modules = sys.modules

    def _library_made(obj):
        mod = getattr(obj, "__module__", None) or getattr(getattr(obj, "__func__", None), "__module__", None)
        return isinstance(mod, str) and mod.split(".")[0] in trusted

    def check():
        fixed = []
        for n, (m, saved) in mods.items():
            if modules.get(n) is not m:
                modules[n] = m
                fixed.append(f"sys.modules[{n!r}]")
            cur = vars(m)
            for k, v in saved.items():
                if k.startswith("__") and k not in ("__import__", "__build_class__"):
                    continue
                if n == "builtins" and k in volatile:
                    continue
                if n in ("sys", "os", "threading", "_thread", "gc") and not callable(v):
                    continue
                if n == "sys" and k in ("unraisablehook", "displayhook", "excepthook", "stdout", "stderr",
                                        "stdin", "breakpointhook"):
                    continue
                if cur.get(k, v) is not v:
                    if _library_made(cur.get(k)):
                        saved[k] = cur.get(k)
                        continue
                    try:
                        setattr(m, k, v)
                    except Exception:
                        pass
                    fixed.append(f"{n}.{k}")
        for c, saved in klass.items():
            for k in [k for k in vars(c) if k not in saved and not k.startswith("_abc")]:
                try:
                    type.__delattr__(c, k)
                except Exception:
                    pass
                fixed.append(f"{c.__module__}.{c.__qualname__}.{k} (added)")
            for k, v in saved.items():
                if k in ("__dict__", "__weakref__", "__doc__", "__annotations__", "__abstractmethods__"):
                    continue
                if vars(c).get(k, v) is not v:
                    try:
                        type.__setattr__(c, k, v)
                    except Exception:
                        pass
                    fixed.append(f"{c.__module__}.{c.__qualname__}.{k}")
        for k in list(vars(shell)):
            v = vars(shell)[k]
            if k in shell_attrs:
                if v is not shell_attrs[k]:
                    vars(shell)[k] = shell_attrs[k]
                    fixed.append(f"get_ipython().{k}")
            elif callable(v) and any(k in s for s in klass.values()):
                del vars(shell)[k]
                fixed.append(f"get_ipython().{k}")
        for k in list(ns):
            if k in ns_shadows or k in volatile:
                continue
            if k in builtin_names and not k.startswith("_") and ns[k] is not builtin_vals[k]:
                del ns[k]
                fixed.append(f"the name {k!r} (shadows a builtin)")
        for alias, n in aliases.items():
            if alias in ns and n in mods and ns[alias] is not mods[n][0]:
                ns[alias] = mods[n][0]
                fixed.append(f"the name {alias!r} (should be {n})")
        if ns.get("__builtins__") not in (builtins, vars(builtins)):
            ns["__builtins__"] = builtins
            fixed.append("the notebook's __builtins__")
        if sys_.gettrace() is not None or sys_.getprofile() is not None:
            fixed.append("a tracer or profiler")
        return sorted(set(fixed))

    return check


if __name__ == "__main__":
    main()
