"""Code the grader runs inside the student's kernel, in cells the student never sees.

* ``SNAPSHOT`` runs first, before any cell of the notebook: it imports the libraries the
  tests rely on and keeps a copy of their attributes (and of IPython's shell class).
* ``CHECK`` runs right before every test cell: anything the student's code replaced
  (``np.allclose = lambda *a: True``, a patched ``course_lib`` helper, a patched
  ``showtraceback``, a builtin shadowed in the notebook's namespace, ``np`` rebound to
  something else) is put back, and the cell *fails* with ``GraderTampering`` naming what
  was restored. The grader reads that from the kernel's reply status and flags the
  submission; the test then runs against the genuine libraries.
* ``SCRUB`` runs right after every hidden-test cell: it forgets the hidden source (line
  cache, last traceback) so later student code cannot print it.

This is defence in depth: the score never depends on what a cell displays (the grader
uses the execution reply status), and the grader's static checks flag code that
reaches for the kernel's internals.
"""

SNAPSHOT = r'''
def __grader_snapshot():
    import builtins, importlib, pkgutil, sys
    names = ["builtins", "math", "operator", "functools", "numpy", "numpy.testing", "numpy.linalg",
             "numpy.random", "pandas", "pandas.testing", "torch", "torch.nn", "torch.nn.functional",
             "torch.testing", "scipy.sparse", "course_lib"]
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
    try:
        from IPython.core.interactiveshell import InteractiveShell
        from ipykernel.zmqshell import ZMQInteractiveShell
        classes += [InteractiveShell, ZMQInteractiveShell]
    except Exception:
        pass
    for dotted in ["torch.Tensor", "pandas.DataFrame", "pandas.Series", "pandas.Index"]:
        mod, _, attr = dotted.rpartition(".")
        if mod in mods and hasattr(mods[mod][0], attr):
            classes.append(getattr(mods[mod][0], attr))
    klass = {c: dict(vars(c)) for c in classes}
    builtin_names = set(vars(builtins))
    aliases = {"np": "numpy", "pd": "pandas", "torch": "torch", "cl": "course_lib", "math": "math"}
    shell = get_ipython()
    trusted = ("torch", "numpy", "pandas", "scipy", "course_lib", "IPython", "ipykernel", "matplotlib",
               "sklearn", "transformers")

    def _library_made(obj):
        mod = getattr(obj, "__module__", None) or getattr(getattr(obj, "__func__", None), "__module__", None)
        return isinstance(mod, str) and mod.split(".")[0] in trusted

    shell_attrs = {k: v for k, v in vars(shell).items() if callable(v)}
    ns_shadows = {k: v for k, v in shell.user_ns.items() if k in builtin_names}
    volatile = {"input", "raw_input", "getpass", "open", "get_ipython", "display", "exit", "quit"}

    def check(where):
        fixed = []
        for n, (m, saved) in mods.items():
            if sys.modules.get(n) is not m:
                sys.modules[n] = m
                fixed.append(f"sys.modules[{n!r}]")
            cur = vars(m)
            for k, v in saved.items():
                if k.startswith("__") and k not in ("__import__", "__build_class__"):
                    continue
                if n == "builtins" and k in volatile:
                    continue
                if cur.get(k, v) is not v:
                    if _library_made(cur.get(k)):
                        saved[k] = cur.get(k)  # a library re-wrapped its own function (e.g. torch on lazy import)
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
        ns = shell.user_ns
        for k in list(ns):
            if k in ns_shadows or k in volatile:
                continue
            if k in builtin_names and not k.startswith("_") and ns[k] is not vars(builtins)[k]:
                del ns[k]
                fixed.append(f"the name {k!r} (shadows a builtin)")
        for alias, n in aliases.items():
            if alias in ns and n in mods and ns[alias] is not mods[n][0]:
                ns[alias] = mods[n][0]
                fixed.append(f"the name {alias!r} (should be {n})")
        for hook in ("excepthook", "displayhook", "settrace", "setprofile"):
            pass
        if sys.gettrace() is not None:
            sys.settrace(None)
            fixed.append("sys.settrace")
        if fixed:
            raise __GraderTampering(f"before {where}: restored " + ", ".join(sorted(set(fixed))[:20]))

    return check


class __GraderTampering(Exception):
    pass


__grader_check = __grader_snapshot()
del __grader_snapshot
'''

CHECK = "__grader_check({where!r})"

HIDDEN_SENTINEL = "# [grader: hidden tests]"


def hidden_cell(hidden: str) -> str:
    """Hidden tests run in a copy of the notebook's namespace: they see everything the student
    defined, but their own variables (inputs, expected values) never land in the notebook."""
    return (f"{HIDDEN_SENTINEL}\n"
            f"exec(compile({hidden!r}, '<hidden tests>', 'exec'), dict(globals()))")

SCRUB = r'''
def __grader_scrub():
    import linecache, sys
    for cache in (linecache.cache, getattr(linecache, "_ipython_cache", {})):
        for k, entry in list(cache.items()):
            try:
                lines = entry[2] if isinstance(entry, tuple) else entry
                if any("[grader: hidden" + " tests]" in str(line) for line in (lines or [])):
                    cache.pop(k, None)
            except Exception:
                pass
    for attr in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, attr):
            try:
                delattr(sys, attr)
            except Exception:
                pass
    try:
        get_ipython()._last_traceback = None
    except Exception:
        pass
__grader_scrub()
del __grader_scrub
'''
