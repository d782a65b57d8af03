"""A corpus of bad (and good) submissions, each with its expected outcome.

Each case builds a student folder from the reference solution or the release of 00_welcome
(or, for the integrity cases, of 01 and 04); the expected outcome is (status, score) plus
optional checks on notes/flags/reason.
"""
from __future__ import annotations

import copy
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "00_welcome"
ANSWER, TEST = "describe", "test_describe"


def _load(kind: str, name: str = NAME) -> dict:
    base = ROOT / ("solutions" if kind == "solution" else "notebooks") / name / f"{name}.ipynb"
    return json.loads(base.read_text(encoding="utf-8"))


def _gid(cell) -> str:
    return (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id", "")


def _index(nb, gid) -> int:
    return next(i for i, c in enumerate(nb["cells"]) if _gid(c) == gid)


GOOD = '''
def describe(df):
    return {"interactions": int(len(df)), "users": int(df["user"].nunique()),
            "items": int(df["item"].nunique()), "mean_rating": float(df["rating"].mean())}
'''

WRONG_MEAN = GOOD.replace('float(df["rating"].mean())', 'float(df["rating"].median())')


def with_answer(src: str, base: str = "release", name: str = NAME, gid: str = ANSWER) -> dict:
    nb = _load(base, name)
    nb["cells"][_index(nb, gid)]["source"] = src.strip("\n")
    return nb


def add_cell(nb: dict, src: str, after_gid: str | None = None) -> dict:
    cell = {"cell_type": "code", "execution_count": None, "id": f"added-{len(nb['cells'])}", "metadata": {},
            "outputs": [], "source": src.strip("\n")}
    pos = _index(nb, after_gid) + 1 if after_gid else len(nb["cells"])
    nb["cells"].insert(pos, cell)
    return nb


@dataclass
class Case:
    name: str
    files: dict                      # relative path -> bytes | dict (notebook)
    status: str | tuple | None       # graded | incomplete | ungradable, or a tuple of the acceptable ones
    score: float | None
    flag: str = ""                   # a substring expected in the flags
    note: str = ""                   # a substring expected in the notes
    reason: str = ""                 # a substring expected in the problem / test reason
    what: str = ""                   # the bad behaviour, for the table
    review: bool | None = None       # must the row be flagged for review (needs_review)?
    notebook: str = NAME             # the assignment it is a submission of
    no_flag: str = ""                # a substring that must be in no flag


class Evil:
    """A pickle that runs code when loaded: it tries to read the gradebook and write outside."""

    def __reduce__(self):
        import os
        return (os.system, ("cat /work/main/grading/gradebook.db > stolen.txt 2>/dev/null; "
                            "ls /work/main/solutions > sol.txt 2>&1; echo pwned > /work/main/pwned.txt",))


def cases(other_student_file: str = "/tmp/other/00_welcome.ipynb", port: int = 9) -> list[Case]:
    nb = lambda d: {f"{NAME}.ipynb": d}  # noqa: E731
    C = []
    sol = _load("solution")
    C.append(Case("correct", nb(sol), "graded", 1.0, review=False, what="the reference solution"))
    C.append(Case("correct_own_code", nb(with_answer(GOOD)), "graded", 1.0, review=False,
                  what="a correct answer of its own"))
    C.append(Case("blank", nb(_load("release")), "graded", 0.0, reason="NotImplementedError", what="the release, untouched"))
    C.append(Case("partly_wrong", nb(with_answer(WRONG_MEAN)),
                  "graded", 0.0, reason="hidden tests failed", what="passes the visible test, fails hidden ones"))
    C.append(Case("raises", nb(with_answer("def describe(df):\n    raise ValueError('boom')")), "graded", 0.0,
                  reason="ValueError", what="raises an exception"))
    C.append(Case("loops", nb(with_answer("def describe(df):\n    while True:\n        pass")), "graded", 0.0,
                  reason="time limit", what="loops forever"))
    C.append(Case("loops_no_interrupt", nb(with_answer(
        "import time\ndef describe(df):\n    while True:\n        try:\n            time.sleep(0.05)\n"
        "        except KeyboardInterrupt:\n            pass")), "incomplete", 0.0, reason="interrupted",
        what="loops while swallowing KeyboardInterrupt"))
    C.append(Case("memory", nb(with_answer(
        "def describe(df):\n    hog = []\n    while True:\n        hog.append(bytearray(50 * 2**20))")),
        # Machine-dependent: a MemoryError in the cell, or the kernel killed (any thread's failed
        # allocation aborts it). What must hold everywhere: a row, score 0, a reason naming
        # memory, and the row flagged for review.
        ("graded", "incomplete"), 0.0, reason="memory", review=True,
        what="allocates memory without bound"))
    C.append(Case("fork_bomb", nb(with_answer(GOOD + "\nimport os\nfor _ in range(100000):\n    try:\n        os.fork()\n"
                                              "    except OSError:\n        break\n")),
                  None, None, what="forks without bound"))
    C.append(Case("prints", nb(with_answer(GOOD + "\nfor i in range(10_000_000):\n    print(i)\n")), "graded", 1.0,
                  what="prints ten million lines"))
    C.append(Case("big_file", nb(with_answer(GOOD + "\nwith open('big.bin', 'wb') as f:\n    for _ in range(4096):\n"
                                             "        f.write(bytes(2**20))\n")), "graded", 1.0,
                  what="writes a multi-gigabyte file"))
    C.append(Case("sys_exit", nb(with_answer("import sys\ndef describe(df):\n    sys.exit(0)")), "graded", 0.0,
                  what="calls sys.exit"))
    C.append(Case("os_exit", nb(with_answer("import os\ndef describe(df):\n    os._exit(0)")), "incomplete", 0.0,
                  reason="kernel died", what="calls os._exit"))
    C.append(Case("kills_kernel", nb(with_answer(GOOD + "\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)")),
                  "incomplete", 0.0, reason="kernel died", what="kills its own kernel"))
    # cell manipulations, with a correct answer
    base = with_answer(GOOD)
    d = copy.deepcopy(base); del d["cells"][_index(d, TEST)]
    C.append(Case("deleted_test", nb(d), "graded", 1.0, note="restored the missing cell", what="deletes the test cell"))
    d = copy.deepcopy(base); d["cells"][_index(d, TEST)]["source"] = "pass"
    C.append(Case("edited_test", nb(d), "graded", 1.0, note="restored the edited cell", what="replaces the test with `pass`"))
    d = copy.deepcopy(base); t = d["cells"].pop(_index(d, TEST)); d["cells"].insert(_index(d, ANSWER), t)
    C.append(Case("reordered", nb(d), "graded", 1.0, what="moves the test cell above the answer"))
    d = copy.deepcopy(base); i = _index(d, TEST); d["cells"].insert(i, copy.deepcopy(d["cells"][i]))
    C.append(Case("duplicated_test", nb(d), "graded", 1.0, note="duplicate", what="duplicates the test cell"))
    d = copy.deepcopy(base)
    for c in d["cells"]:
        c["metadata"].pop("nbgrader", None)
    C.append(Case("stripped_metadata", nb(d), "graded", 1.0, note="missing", what="strips all nbgrader metadata"))
    d = copy.deepcopy(base); d["cells"][_index(d, TEST)]["metadata"].pop("nbgrader")
    d["cells"][_index(d, ANSWER)]["source"] = "def describe(df):\n    return {}"
    d = add_cell(d, "assert True  # my own test")
    C.append(Case("stripped_test_wrong_answer", nb(d), "graded", 0.0, what="strips the test's metadata, answer wrong"))
    C.append(Case("renamed", {"my_homework (1).ipynb": base}, "graded", 1.0, note="renamed", what="renames the notebook"))
    C.append(Case("empty_file", {f"{NAME}.ipynb": b""}, "ungradable", None, reason="empty", what="an empty file"))
    C.append(Case("empty_folder", {"README.txt": b"I forgot"}, "ungradable", None, reason="no notebook",
                  what="no notebook at all"))
    C.append(Case("not_a_notebook", {f"{NAME}.ipynb": b"\x89PNG\r\n\x1a\n\x00\x00binary"}, "ungradable", None,
                  reason="not a notebook", what="a file that is not a notebook"))
    C.append(Case("corrupt_json", {f"{NAME}.ipynb": json.dumps(base).encode()[:5000]}, "ungradable", None,
                  reason="not valid notebook JSON", what="truncated (corrupt) JSON"))
    C.append(Case("json_not_notebook", {f"{NAME}.ipynb": b'{"hello": 1}'}, "ungradable", None,
                  reason="not a Jupyter notebook", what="JSON that is not a notebook"))
    # cheating
    C.append(Case("patch_numpy", nb(with_answer(GOOD + "\nimport numpy as np\nnp.allclose = lambda *a, **k: True\n"
                                                "np.testing.assert_allclose = lambda *a, **k: None")),
                  "graded", 1.0, flag="numpy.allclose", what="monkeypatches numpy"))
    C.append(Case("patch_torch", nb(with_answer(GOOD + "\nimport torch\ntorch.allclose = lambda *a, **k: True")),
                  "graded", 1.0, flag="torch.allclose", what="monkeypatches torch"))
    C.append(Case("patch_helpers", nb(with_answer(GOOD + "\nimport course_lib.metrics as m\n"
                                                  "m.ndcg_at_k = lambda *a, **k: 1.0\nabs = lambda x: 0")),
                  "graded", 1.0, flag="course_lib.metrics.ndcg_at_k", what="monkeypatches the test helpers, shadows abs"))
    C.append(Case("patch_pandas", nb(with_answer(GOOD + "\nimport pandas as pd\npd.Series.nunique = lambda self, *a, **k: 3")),
                  "graded", 1.0, flag="pandas.Series.nunique", what="monkeypatches a pandas class (restored before the tests)"))
    C.append(Case("patch_traceback", nb(with_answer(
        "from IPython import get_ipython\nfrom IPython.core.interactiveshell import InteractiveShell\n"
        "get_ipython().showtraceback = lambda *a, **k: None\nInteractiveShell.showtraceback = lambda *a, **k: None\n"
        "def describe(df):\n    raise ValueError('wrong')")), "graded", 0.0, flag="showtraceback",
        what="patches IPython's traceback display, answer wrong"))
    C.append(Case("always_equal", nb(with_answer(
        "class Any:\n    def __eq__(self, other):\n        return True\n    def __lt__(self, other):\n        return True\n"
        "    __hash__ = object.__hash__\ndef describe(df):\n    return {k: Any() for k in "
        "('interactions', 'users', 'items', 'mean_rating')}")), "graded", 0.0, flag="__eq__",
        what="returns objects whose __eq__ is always true"))
    C.append(Case("float_subclass", nb(with_answer(
        "class F(float):\n    def __eq__(self, other):\n        return True\n    def __sub__(self, other):\n"
        "        return F(0)\n    __hash__ = float.__hash__\ndef describe(df):\n"
        "    return {'interactions': int(len(df)), 'users': int(df['user'].nunique()), "
        "'items': int(df['item'].nunique()), 'mean_rating': F(0)}")), "graded", 0.0, flag="subclasses",
        what="a float subclass equal to anything"))
    C.append(Case("reference_call", nb(with_answer(
        "import course_lib as cl\ndef describe(df):\n    return cl.data.describe(df) if hasattr(cl.data, 'describe') "
        "else {'interactions': int(len(df)), 'users': int(df['user'].nunique()), 'items': int(df['item'].nunique()), "
        "'mean_rating': float(df['rating'].mean())}")), "graded", 1.0, flag="integrity",
        what="calls course_lib's reference of the function it should write"))
    spy = GOOD + '''
import os, socket
found = {}
for p in [ROOTDIR + "/solutions", ROOTDIR + "/grading", ROOTDIR + "/.git", "/root", "/tmp"]:
    try:
        found[p] = sorted(os.listdir(p))
    except Exception as e:
        found[p] = type(e).__name__
try:
    # a listener the grader opened on the host's loopback: unreachable from the sandbox's own network
    socket.create_connection(("127.0.0.1", PORT), timeout=3)
    found["net"] = "connected"
except OSError as e:
    found["net"] = type(e).__name__
for target in [ROOTDIR + "/grading/gradebook.db", ROOTDIR + "/solutions/x.txt", OTHER, ROOTDIR + "/notebooks/00_welcome/00_welcome.ipynb"]:
    try:
        open(target, "a").write("overwritten")
        found[target] = "written"
    except OSError as e:
        found[target] = type(e).__name__
print("SPY", found)
'''
    spy = spy.replace("OTHER", repr(other_student_file)).replace("ROOTDIR", repr(str(ROOT))).replace("PORT", str(port))
    C.append(Case("spy", nb(with_answer(spy)), "graded", 1.0, flag="solutions",
                  what="reads solutions/gradebook, opens a socket, writes other files"))
    C.append(Case("evil_pickle", {f"{NAME}.ipynb": with_answer(GOOD + "\nimport pickle\nmodel = pickle.load(open('model.pkl', 'rb'))"),
                                  "model.pkl": pickle.dumps(Evil())}, "graded", 1.0, flag="unpickles",
                  what="ships a pickle that runs code when loaded"))
    leak = '''
import linecache, sys
print("LEAK1", [v for v in linecache.cache.values()])
print("LEAK2", getattr(sys, "last_value", None), In, {k: v for k, v in globals().items() if k.startswith("_")})
'''
    C.append(Case("leaker", nb(add_cell(with_answer(WRONG_MEAN), leak)),
                  "graded", 0.0, flag="linecache", what="prints the kernel's cell cache and last traceback after the tests"))
    # several notebooks in one folder: the untouched release and the work saved as a copy (newer)
    C.append(Case("two_notebooks", {f"{NAME}.ipynb": _load("release"), f"{NAME}-Copy1.ipynb": base},
                  "graded", 1.0, note="graded `00_welcome-Copy1.ipynb`", review=False,
                  what="the release untouched plus the work saved as -Copy1 (newer)"))
    C.append(Case("two_notebooks_both_work", {f"{NAME}.ipynb": with_answer(WRONG_MEAN), f"{NAME}-Copy1.ipynb": base},
                  "graded", 1.0, note="graded the newest", flag="2 notebooks hold work", review=True,
                  what="two notebooks with different work: the newest is graded, flagged as ambiguous"))
    C.append(Case("html_payload", nb(add_cell(with_answer(GOOD), HTML_PAYLOAD)), "graded", 1.0,
                  what="displays <script>, an onerror handler, an iframe, next to a plot"))
    C.extend(forgery_cases())
    C.extend(leak_cases())
    C.extend(integrity_cases())
    return C


HTML_PAYLOAD = '''
from IPython.display import HTML, Image, display
import io
import matplotlib.pyplot as plt
display(HTML("<script>document.title='pwned'</script><img src=x onerror=\\"alert(document.cookie)\\">"
             "<iframe src='https://example.com'></iframe><b onclick='alert(1)'>bold but harmless</b>"
             "<a href='javascript:alert(2)'>link</a>"))
fig = plt.figure(figsize=(2, 2))
plt.plot([1, 2, 3])
buf = io.BytesIO()
fig.savefig(buf, format="png")
display(Image(buf.getvalue()))  # a plot, as the grading kernel (Agg backend) can show one
'''

BLANK = "def describe(df):\n    raise NotImplementedError"

FORGE_DO_EXECUTE = '''
from ipykernel.kernelapp import IPKernelApp
_k = IPKernelApp.instance().kernel
_orig = _k.do_execute
async def _do_execute(*a, **kw):
    r = _orig(*a, **kw)
    if hasattr(r, "__await__"):
        r = await r
    if r.get("status") == "error":
        r = {"status": "ok", "execution_count": r.get("execution_count"), "payload": [], "user_expressions": {}}
    return r
_k.do_execute = _do_execute
'''

FORGE_RUN_CELL = '''
from IPython import get_ipython
_sh = get_ipython()
_orig_async, _orig = _sh.run_cell_async, _sh.run_cell
def _clean(r):
    r.error_in_exec = None
    r.error_before_exec = None
    return r
async def _run_cell_async(*a, **kw):
    return _clean(await _orig_async(*a, **kw))
_sh.run_cell_async = _run_cell_async
_sh.run_cell = lambda *a, **kw: _clean(_orig(*a, **kw))
'''

FORGE_TRACE = '''
import sys, linecache
def _skip_asserts(frame, event, arg):
    frame.f_trace_lines = True
    if event == "line":
        try:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
            if line.startswith("assert") or "describe(" in line:
                frame.f_lineno = frame.f_lineno + 1
        except Exception:
            pass
    return _skip_asserts
sys.settrace(_skip_asserts)
'''

FORGE_HOOKS = '''
import sys, builtins
class _Never(Exception):
    pass
builtins.AssertionError = _Never
builtins.NotImplementedError = _Never
sys.excepthook = lambda *a: None
sys.setprofile(lambda *a: None)
import threading
threading.excepthook = lambda *a: None
sys.unraisablehook = lambda *a: None
'''

FORGE_CHANNEL = '''
import os, sys, gc
def _forge(tag=b"0" * 32):
    if "ipykernel" in sys.modules:
        return  # only the grading run's channel is the target
    cands = {tag}
    try:
        f = sys._getframe()
        while f is not None:  # walk up to whatever called the test, looking for the nonce
            for v in list(f.f_locals.values()) + list(f.f_globals.values()):
                if isinstance(v, str) and len(v) == 32:
                    cands.add(v.encode())
            f = f.f_back
    except Exception:
        pass
    try:
        for o in gc.get_objects():
            if isinstance(o, str) and len(o) == 32:
                cands.add(o.encode())
    except Exception:
        pass
    for c in cands:
        for k in range(3):
            for line in (b"E %d visible ok -" % k, b"E %d hidden ok -" % k, b"END"):
                for fd in range(3, 40):
                    try:
                        os.write(fd, c + b" " + line + b"\\n")
                    except OSError:
                        pass
def describe(df):
    _forge()
    raise NotImplementedError
'''

FORGE_EXIT = GOOD + '''
import os
_real = describe
def describe(df):
    if len(df) < 10:   # the hidden tests' tiny input: leave before an assert can fail
        os._exit(0)
    return _real(df)
'''


def forgery_cases() -> list[Case]:
    """Ways to turn a failing test into a pass without a right answer (issue: a forged verdict)."""
    nb = lambda d: {f"{NAME}.ipynb": d}  # noqa: E731
    return [
        Case("forge_do_execute", nb(with_answer(FORGE_DO_EXECUTE + BLANK)), "graded", 0.0, flag="verdict",
             review=True, what="rewrites the kernel's error replies as ok (kernel.do_execute wrapped)"),
        Case("forge_run_cell", nb(with_answer(FORGE_RUN_CELL + BLANK)), "graded", 0.0, flag="tampering",
             review=True, what="clears the shell's ExecutionResult errors (run_cell/run_cell_async wrapped)"),
        Case("forge_settrace", nb(with_answer(FORGE_TRACE + BLANK)), ("graded", "incomplete"), 0.0, flag="sys.settrace",
             review=True, what="a tracer that jumps over the asserts and the calls"),
        Case("forge_hooks", nb(with_answer(FORGE_HOOKS + BLANK)), "graded", 0.0, flag="tampering",
             review=True, what="replaces AssertionError, sys.excepthook, a profiler, thread/unraisable hooks"),
        Case("forge_channel", nb(with_answer(FORGE_CHANNEL)), "graded", 0.0, flag="forge",
             review=True, what="walks frames and gc for the nonce, writes fake verdict lines to every fd"),
        Case("forge_exit", nb(with_answer(FORGE_EXIT)), "graded", 0.0, review=True,
             reason="process ended", what="os._exit(0) when the hidden tests call it, to look like success"),
    ]


LEAK_AUDIT = GOOD + '''
import sys
_seen = []
def _keep(event, args):
    if event == "compile" and args and isinstance(args[0], (str, bytes)):
        _seen.append(args[0] if isinstance(args[0], str) else args[0].decode(errors="replace"))
    elif event == "exec" and args and hasattr(args[0], "co_consts"):
        _seen.append(repr(args[0].co_consts))
sys.addaudithook(_keep)
'''
LEAK_AUDIT_END = '''
import base64
print(base64.b64encode("\\n".join(_seen).encode()).decode()[::-1])
'''

LEAK_TRACE = GOOD + '''
import sys, threading
_codes = []
def _grab(frame, event, arg):
    _codes.append(frame.f_code)
    return None
sys.settrace(_grab)
threading.settrace(_grab)
'''
LEAK_TRACE_END = '''
import sys
sys.settrace(None)
print("".join(repr(c.co_consts) + repr(c.co_names) for c in _codes).encode().hex())
'''

LEAK_GC_END = '''
import gc, types
_found = []
for o in gc.get_objects():
    if isinstance(o, types.CodeType):
        _found.append(repr(o.co_consts))
    elif isinstance(o, dict):
        _found += [v for v in o.values() if isinstance(v, str) and len(v) > 20]
print("\\n".join(_found)[::-1])
'''

LEAK_FILE = '''
import sys, os
def describe(df):
    with open("/tmp/work/.seen.txt", "a") as f:
        f.write(repr(sys._getframe(1).f_code.co_consts) + repr(sorted(sys._getframe(1).f_globals)) + "\\n")
    return {"interactions": int(len(df)), "users": int(df["user"].nunique()),
            "items": int(df["item"].nunique()), "mean_rating": float(df["rating"].mean())}
'''
LEAK_FILE_END = '''
import base64, os
for p in ("/tmp/work/.seen.txt", ".seen.txt"):
    if os.path.exists(p):
        print(base64.b64encode(open(p).read().encode()).decode())
'''


def leak_cases() -> list[Case]:
    """Ways to smuggle the hidden tests out into the student's own feedback (none may work)."""
    nb = lambda d: {f"{NAME}.ipynb": d}  # noqa: E731
    return [
        Case("leak_audit_hook", nb(add_cell(with_answer(LEAK_AUDIT), LEAK_AUDIT_END)), "graded", 1.0,
             what="an audit hook keeps every compiled source; printed base64, reversed, at the end"),
        Case("leak_settrace", nb(add_cell(with_answer(LEAK_TRACE), LEAK_TRACE_END)), "graded", 1.0,
             what="a tracer keeps every frame's code; printed as hex at the end"),
        Case("leak_gc", nb(add_cell(with_answer(GOOD), LEAK_GC_END)), "graded", 1.0,
             what="scans gc.get_objects() for code and strings at the end, printed reversed"),
        Case("leak_file", nb(add_cell(with_answer(LEAK_FILE), LEAK_FILE_END)), "graded", 1.0,
             what="the answer writes its caller's code to a file, printed base64 at the end"),
    ]


LEAK_CASES = [c.name for c in leak_cases()]


# --------------------------------------------------------------------------- integrity (issue 15)
# An answer that reaches course_lib's reference of the very function it should write, however it
# reaches it, is flagged for review (never a score change); a correct answer that uses an allowed
# helper, or a student's own cell that checks an answer against the reference, is not.

NB01, NB04, NB07 = "01_interaction_matrix", "04_markov_chains", "07_bert4rec"
INTEGRITY = "integrity: the answer"
DYNAMIC = "in the grading run"


def _solution_answer(name: str, gid: str) -> str:
    nb = _load("solution", name)
    return nb["cells"][_index(nb, gid)]["source"]


def _matrix(expr: str, head: str = "") -> str:
    """01's build_matrix answered by calling ``expr`` (course_lib's interaction_matrix, somehow)."""
    return (head + "\ndef build_matrix(df, n_users, n_items, implicit=False):\n"
            f"    return {expr}(df, n_users, n_items, implicit=implicit)\n")


def _counts(expr: str, head: str = "") -> str:
    """04's count_transitions answered by calling ``expr`` (course_lib's transition_counts, somehow)."""
    return (head + "\ndef count_transitions(histories, n_items):\n"
            f"    return np.asarray({expr}(histories, n_items).toarray(), dtype=np.int64)\n")


COUNTS_OWN = '''
def count_transitions(histories, n_items):
    C = np.zeros((n_items + 1, n_items + 1), dtype=np.int64)
    for h in histories:
        h = np.asarray(h, dtype=np.int64)
        np.add.at(C, (h[:-1], h[1:]), 1)
    return C
'''

# a student's own check of the answer against the reference, at the top level of their own cell
SELF_CHECK = '''
from course_lib.models.markov import transition_counts
_h = [np.array([1, 2, 1, 2]), np.array([2, 3])]
assert np.array_equal(count_transitions(_h, 3), transition_counts(_h, 3).toarray())
print("my count_transitions agrees with course_lib's")
'''

# unwraps the grading run's watch on interaction_matrix (a closure walk) and puts the original back
UNWRAP = '''
import course_lib.prep as _p
_real = _p.interaction_matrix
for _c in (getattr(_real, "__closure__", None) or ()):
    _v = _c.cell_contents
    if callable(_v) and getattr(_v, "__name__", "") == "interaction_matrix" and _v is not _real:
        _p.interaction_matrix = _real = _v
'''


def integrity_cases() -> list[Case]:
    """Each way of reaching the reference. A case imports what it uses itself unless the point is a
    name a course cell imported (notebooks import the references after the exercises, so such a
    call fails when the tests run: only the static check can see it)."""
    def c01(name, answer, flag, what, cell="", **kw):
        d = with_answer(answer, name=NB01, gid="build_matrix")
        if cell:
            d = add_cell(d, cell, after_gid="build_matrix")
        return Case(name, {f"{NB01}.ipynb": d}, "graded", None, flag=flag, review=True, notebook=NB01, what=what, **kw)

    def c04(name, answer, flag, what, cell="", **kw):
        d = with_answer(answer, name=NB04, gid="count_transitions")
        if cell:
            d = add_cell(d, cell, after_gid="count_transitions")
        return Case(name, {f"{NB04}.ipynb": d}, "graded", None, flag=flag, review=True, notebook=NB04, what=what, **kw)

    both = (INTEGRITY, DYNAMIC)  # flagged statically and by the grading run's watch
    prep_ = "from course_lib import prep"
    return [
        c04("ref_by_name", _counts("transition_counts"), INTEGRITY,
            "calls transition_counts, which a course cell imports by name"),
        c04("ref_alias_own_cell", _counts("tc"), both, "calls tc, set to transition_counts in the student's own cell",
            cell="from course_lib.models.markov import transition_counts\ntc = transition_counts"),
        c01("ref_alias_import", _matrix("im", "from course_lib.prep import interaction_matrix as im"), both,
            "imports interaction_matrix under another name in the answer"),
        c01("ref_alias_attribute", _matrix("f"), both, "calls f, set to prep.interaction_matrix in its own cell",
            cell=prep_ + "\nf = prep.interaction_matrix"),
        c01("ref_attribute", _matrix("prep.interaction_matrix", prep_), both, "calls prep.interaction_matrix"),
        c04("ref_attribute_deep", _counts("cl.models.markov.transition_counts", "import course_lib.models.markov"),
            both, "calls cl.models.markov.transition_counts"),
        c01("ref_getattr_const", _matrix('getattr(prep, "interaction_matrix")', prep_), both,
            "getattr(prep, \"interaction_matrix\")"),
        c04("ref_getattr_built", _counts('getattr(m, "transition" + "_counts")', "import course_lib.models.markov as m"),
            both, "getattr(m, \"transition\" + \"_counts\") on the module imported as m"),
        c01("ref_getattr_runtime", _matrix('getattr(prep, "".join(reversed("xirtam_noitcaretni")))', prep_),
            (DYNAMIC, "computed at run time"), "getattr with a name only known at run time: the grading run sees it"),
        c04("ref_module_alias", _counts("mk.transition_counts"), both,
            "the module imported as mk in the student's own cell", cell="import course_lib.models.markov as mk"),
        c01("ref_importlib", _matrix('importlib.import_module("course_lib" + ".prep").interaction_matrix',
                                     "import importlib"), both, "importlib.import_module(...).interaction_matrix"),
        c01("ref_unwrap", _matrix("_real"), ("tampering: the grading run's watch", "unwrapped", "__closure__"),
            "finds the original behind the grading run's wrapper (closure walk) and puts it back", cell=UNWRAP),
        Case("ref_clean_allowed_helper", {f"{NB07}.ipynb": with_answer(
            prep_ + "\n\n" + _solution_answer(NB07, "inference_input"), name=NB07, gid="inference_input")},
             "graded", None, notebook=NB07, no_flag="integrity",
             what="07's inference_input with prep.pad_sequences, as the prose recommends: not flagged"),
        Case("ref_clean_self_check", {f"{NB04}.ipynb": add_cell(with_answer(COUNTS_OWN, name=NB04, gid="count_transitions"),
                                                                 SELF_CHECK, after_gid="count_transitions")},
             "graded", None, review=False, notebook=NB04, no_flag="integrity",
             what="its own count_transitions, checked against transition_counts in its own cell: not flagged"),
    ]


INTEGRITY_CASES = [c.name for c in integrity_cases()]


def write(case: Case, folder: Path) -> Path:
    """The case's files, each one a minute newer than the one before (in the order given)."""
    import os
    import time

    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time() - 3600
    for i, (rel, content) in enumerate(case.files.items()):
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else json.dumps(content, indent=1).encode())
        os.utime(p, (t0 + 60 * i, t0 + 60 * i))
    return folder
