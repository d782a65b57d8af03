"""Code the grader runs inside the student's kernel, in cells the student never sees.

* ``SNAPSHOT`` runs first, before any cell of the notebook: it imports the libraries the
  tests rely on and keeps a copy of their attributes (and of IPython's shell class); the code
  is ``grading/snapshot.py``'s, shared with the grading run (``verdict_main.py``).
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
from pathlib import Path

_SNAPSHOT_SOURCE = (Path(__file__).resolve().parent / "snapshot.py").read_text(encoding="utf-8")

# The snapshot's source runs in a private namespace; the notebook only gets the check function.
SNAPSHOT = r'''
class __GraderTampering(Exception):
    pass


def __grader_setup(source):
    private = {"__name__": "grader_snapshot"}
    exec(compile(source, "<grader snapshot>", "exec"), private)
    restore = private["snapshot"](get_ipython().user_ns, get_ipython())

    def check(where):
        fixed = restore()
        if fixed:
            raise __GraderTampering(f"before {where}: restored " + ", ".join(fixed[:20]))
    return check


__grader_check = __grader_setup(%r)
del __grader_setup
''' % _SNAPSHOT_SOURCE

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
