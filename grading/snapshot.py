"""The library guard: one snapshot-and-restore, shared by both places where student code runs.

:func:`snapshot` copies, before any student cell, the attributes of the libraries the tests
rely on (numpy, pandas, torch, course_lib, builtins, ...), of a few classes (IPython's shell,
``torch.Tensor``, ``pandas.DataFrame``...) and the builtins the notebook's namespace does not
shadow yet. The ``check()`` it returns puts back whatever student code replaced since
(``np.allclose = lambda *a: True``, a patched ``course_lib`` helper, a method added to the
shell, a builtin shadowed in the namespace, ``np`` rebound) and returns what it restored, so
the caller can flag the submission; the test then runs against the genuine libraries.

Both callers run this *source*, never an import of ``grading``:

* the feedback run, in the student's kernel (``grading/guard.py``'s ``SNAPSHOT`` cell executes
  this file's text in a private namespace and raises ``GraderTampering`` when ``check()``
  restored something);
* the grading run (``grading/verdict_main.py``), a fresh ``python -I`` process started from a
  copied file in the sandbox, where ``grading/`` is hidden: ``grading/verdict.py`` copies this
  file next to it and puts it first in the copy. There ``system=True`` also guards ``sys``,
  ``os``, ``threading``, ``_thread`` and ``gc`` (their functions only: a kernel changes
  ``sys.stdout`` and friends legitimately).

A library that re-wraps *its own* function (torch does on lazy import) is not tampering: a
replacement whose ``__module__`` belongs to a trusted library becomes the new reference.
"""

BASE_MODULES = ("builtins", "math", "operator", "functools", "numpy", "numpy.testing", "numpy.linalg",
                "numpy.random", "pandas", "pandas.testing", "torch", "torch.nn", "torch.nn.functional",
                "torch.testing", "scipy.sparse", "course_lib")
SYSTEM_MODULES = ("sys", "threading", "_thread", "os", "gc")
CLASSES = ("torch.Tensor", "pandas.DataFrame", "pandas.Series", "pandas.Index", "numpy.ndarray")
ALIASES = {"np": "numpy", "pd": "pandas", "torch": "torch", "cl": "course_lib", "math": "math"}
TRUSTED = ("torch", "numpy", "pandas", "scipy", "course_lib", "IPython", "ipykernel", "matplotlib", "sklearn",
           "transformers")
# names the shell itself rebinds while it runs cells (output history, input, display helpers)
VOLATILE = frozenset({"input", "raw_input", "getpass", "open", "get_ipython", "display", "exit", "quit", "_", "__",
                      "___", "In", "Out", "_ih", "_oh", "_dh", "_i", "_ii", "_iii"})
# sys attributes an interpreter or a kernel sets legitimately
SYS_HOOKS = frozenset({"unraisablehook", "displayhook", "excepthook", "stdout", "stderr", "stdin", "breakpointhook"})
UNCHECKED_CLASS_ATTRS = frozenset({"__dict__", "__weakref__", "__doc__", "__annotations__", "__abstractmethods__"})


def snapshot(ns, shell, system=False):  # noqa: C901 - the restore loops share the snapshot's locals
    """Copy the guarded state now; return ``check()``, which restores it and names what it restored."""
    import builtins
    import importlib
    import pkgutil
    import sys

    names = list(BASE_MODULES) + (list(SYSTEM_MODULES) if system else [])
    try:
        import course_lib
        names += [m.name for m in pkgutil.walk_packages(course_lib.__path__, "course_lib.") if ".demos" not in m.name]
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
    for dotted in CLASSES:
        mod, _, attr = dotted.rpartition(".")
        if mod in mods and hasattr(mods[mod][0], attr):
            classes.append(getattr(mods[mod][0], attr))
    classes += [c for c in type(shell).__mro__ if c.__module__.startswith(("IPython", "ipykernel"))]
    klass = {c: dict(vars(c)) for c in classes}
    shell_attrs = {k: v for k, v in vars(shell).items() if callable(v)}
    builtin_names = set(vars(builtins))
    builtin_vals = dict(vars(builtins))
    ns_shadows = {k for k in ns if k in builtin_names}
    modules = sys.modules
    gettrace, getprofile, settrace, setprofile = sys.gettrace, sys.getprofile, sys.settrace, sys.setprofile
    system_names = set(SYSTEM_MODULES)

    def library_made(obj):
        mod = getattr(obj, "__module__", None) or getattr(getattr(obj, "__func__", None), "__module__", None)
        return isinstance(mod, str) and mod.split(".")[0] in TRUSTED

    def restore_modules(fixed):
        for n, (m, saved) in mods.items():
            if modules.get(n) is not m:
                modules[n] = m
                fixed.append(f"sys.modules[{n!r}]")
            cur = vars(m)
            for k, v in saved.items():
                if k.startswith("__") and k not in ("__import__", "__build_class__"):
                    continue
                if (n == "builtins" and k in VOLATILE) or (n in system_names and not callable(v)) \
                        or (n == "sys" and k in SYS_HOOKS):
                    continue
                if cur.get(k, v) is not v:
                    if library_made(cur.get(k)):
                        saved[k] = cur.get(k)
                        continue
                    try:
                        setattr(m, k, v)
                    except Exception:
                        pass
                    fixed.append(f"{n}.{k}")

    def restore_classes(fixed):
        for c, saved in klass.items():
            for k in [k for k in vars(c) if k not in saved and not k.startswith("_abc")]:
                try:
                    type.__delattr__(c, k)
                except Exception:
                    pass
                fixed.append(f"{c.__module__}.{c.__qualname__}.{k} (added)")
            for k, v in saved.items():
                if k not in UNCHECKED_CLASS_ATTRS and vars(c).get(k, v) is not v:
                    try:
                        type.__setattr__(c, k, v)
                    except Exception:
                        pass
                    fixed.append(f"{c.__module__}.{c.__qualname__}.{k}")

    def restore_shell_and_names(fixed):
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
            if k in ns_shadows or k in VOLATILE:
                continue
            if k in builtin_names and not k.startswith("_") and ns[k] is not builtin_vals[k]:
                del ns[k]
                fixed.append(f"the name {k!r} (shadows a builtin)")
        for alias, n in ALIASES.items():
            if alias in ns and n in mods and ns[alias] is not mods[n][0]:
                ns[alias] = mods[n][0]
                fixed.append(f"the name {alias!r} (should be {n})")
        if ns.get("__builtins__") not in (builtins, vars(builtins)):
            ns["__builtins__"] = builtins
            fixed.append("the notebook's __builtins__")

    def check():
        fixed = []
        restore_modules(fixed)
        restore_classes(fixed)
        restore_shell_and_names(fixed)
        if gettrace() is not None or getprofile() is not None:
            for unset in (settrace, setprofile):
                try:
                    unset(None)
                except Exception:  # refused by the grading run's audit hook: it was never set there
                    pass
            fixed.append("a tracer or profiler")
        return sorted(set(fixed))

    return check
