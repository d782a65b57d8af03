"""The integrity check (grading/integrity.py): which answers reach the reference of the very
function they should write, statically (every way of naming it) and from the grading run's records.
Fast: no sandbox, no kernel (the graded cases are in corpus.py, `-k ref_`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
from grading import assignment as asg  # noqa: E402
from grading import integrity  # noqa: E402
from grading import verdict  # noqa: E402

NB04, NB01, NB07 = "04_markov_chains", "01_interaction_matrix", "07_bert4rec"
_LOADED: dict = {}


def load(name):
    if name not in _LOADED:
        _LOADED[name] = asg.load(name)
    return _LOADED[name]


def flags_of(name, answer, gid, cells=(), base="release"):
    """Static integrity flags of the release (or solution) of ``name`` with ``answer`` in the answer
    cell ``gid`` and ``cells`` added right after it (in order)."""
    a = load(name)
    nb = corpus.with_answer(answer, base=base, name=name, gid=gid)
    for src in reversed(cells):
        nb = corpus.add_cell(nb, src, after_gid=gid)
    rebuilt, _ = asg.rebuild(nb, a)
    return [f for f in integrity.static_flags(a, rebuilt) if f.startswith("integrity:")]


def counts(expr, head=""):
    return corpus._counts(expr, head)


# ---------------------------------------------------------------- every way of reaching the reference

# notebooks import the references after the exercises: code that uses one at the top level of a
# cell (where it runs at once) imports it first
IMP = "from course_lib.models.markov import transition_counts\n"

REACH_04 = {
    "by name": (counts("transition_counts"), []),
    "alias in the answer": (counts("tc", IMP + "tc = transition_counts"), []),
    "alias in an own cell": (counts("tc"), [IMP + "tc = transition_counts"]),
    "tuple unpacking": (counts("tc"), [IMP + "tc, _x = transition_counts, 1"]),
    "alias of an attribute": (counts("f"), ["f = cl.models.markov.transition_counts"]),
    "import as": (counts("tc", "from course_lib.models.markov import transition_counts as tc"), []),
    "star import": (counts("transition_counts", "from course_lib.models.markov import *"), []),
    "module alias": (counts("mk.transition_counts"), ["import course_lib.models.markov as mk"]),
    "module from package": (counts("markov.transition_counts", "from course_lib.models import markov"), []),
    "attribute chain": (counts("cl.models.markov.transition_counts"), []),
    "plain import": (counts("course_lib.models.markov.transition_counts", "import course_lib.models.markov"), []),
    "getattr constant": (counts('getattr(cl.models.markov, "transition_counts")'), []),
    "getattr built": (counts('getattr(m, "transition" + "_counts")', "import course_lib.models.markov as m"), []),
    "getattr f-string": (counts('getattr(m, f"{_a}_counts")', "import course_lib.models.markov as m\n_a = 'transition'"),
                         []),
    "getattr join": (counts('getattr(m, "_".join(["transition", "counts"]))', "import course_lib.models.markov as m"),
                     []),
    "getattr reversed slice": (counts('getattr(m, "stnuoc_noitisnart"[::-1])', "import course_lib.models.markov as m"),
                               []),
    "getattr variable": (counts("getattr(m, _n)"), ["import course_lib.models.markov as m\n_n = 'transition_counts'"]),
    "vars": (counts('vars(m)["transition_counts"]', "import course_lib.models.markov as m"), []),
    "__dict__ get": (counts('m.__dict__.get("transition_counts")', "import course_lib.models.markov as m"), []),
    "sys.modules": (counts('sys.modules["course_lib.models.markov"].transition_counts', "import sys"), []),
    "importlib": (counts('importlib.import_module("course_lib.models.markov").transition_counts', "import importlib"), []),
    "from importlib": (counts('import_module("course_lib.models.markov").transition_counts',
                              "from importlib import import_module"), []),
    "__import__ fromlist": (counts('__import__("course_lib.models.markov", fromlist=["x"]).transition_counts'), []),
    "__import__ top": (counts('__import__("course_lib.models.markov").models.markov.transition_counts'), []),
    "globals": (counts('globals()["transition_counts"]'), []),
    "container": (counts('_d["f"]'), [IMP + '_d = {"f": transition_counts}']),
    "partial": (counts("_p", IMP + "import functools\n_p = functools.partial(transition_counts)"), []),
    "default argument": ("def count_transitions(histories, n_items, _f=transition_counts):\n"
                         "    return np.asarray(_f(histories, n_items).toarray(), dtype=np.int64)", []),
    "local alias": ("def count_transitions(histories, n_items):\n    f = transition_counts\n"
                    "    return np.asarray(f(histories, n_items).toarray(), dtype=np.int64)", []),
    "local import": ("def count_transitions(histories, n_items):\n"
                     "    from course_lib.models.markov import transition_counts as t\n"
                     "    return np.asarray(t(histories, n_items).toarray(), dtype=np.int64)", []),
    "lambda answer": (IMP + "count_transitions = lambda h, n: transition_counts(h, n).toarray()", []),
    "helper in an own cell": (counts("_helper"), ["def _helper(h, n):\n    return transition_counts(h, n)"]),
    "helper of a helper": (counts("_h1"), ["def _h2(h, n):\n    return transition_counts(h, n)\n"
                                           "def _h1(h, n):\n    return _h2(h, n)"]),
    "helper returning it": (counts("_get()"), ["def _get():\n    return transition_counts"]),
    "answer redefined in an own cell": (counts("np.zeros"), [counts("transition_counts")]),
    "walrus": (counts("(_t := transition_counts)"), []),
    "conditional alias": (counts("_t"), [IMP + "if True:\n    _t = transition_counts\nelse:\n    _t = None"]),
}


@pytest.mark.parametrize("how", list(REACH_04))
def test_every_way_of_reaching_the_reference_is_flagged(how):
    answer, cells = REACH_04[how]
    got = flags_of(NB04, answer, "count_transitions", cells)
    assert any("`count_transitions`" in f and "transition_counts" in f for f in got), (how, got)


def test_the_flag_says_where_and_what():
    (f,) = flags_of(NB04, counts("tc"), "count_transitions", [IMP + "tc = transition_counts"])
    assert f.startswith("integrity: the answer `count_transitions` reaches course_lib's reference `transition_counts`")
    assert "course_lib.models.markov.transition_counts" in f and "`tc`" in f and "instead of implementing it" in f


def test_01_attribute_getattr_import():
    for answer in (corpus._matrix("prep.interaction_matrix"), corpus._matrix('getattr(prep, "interaction_matrix")'),
                   corpus._matrix("pp.interaction_matrix", "import course_lib.prep as pp"),
                   corpus._matrix("cl.prep.interaction_matrix")):
        got = flags_of(NB01, answer, "build_matrix")
        assert any("interaction_matrix" in f for f in got), (answer, got)


def test_same_named_function_is_a_reference():
    got = flags_of(NB01, "def ndcg_at_k(ranked, relevant, k):\n    return metrics.ndcg_at_k(ranked, relevant, k)",
                   "ndcg_at_k")
    assert any("course_lib.metrics.ndcg_at_k" in f for f in got), got


def test_computed_name_is_left_to_the_grading_run_but_marked():
    a = load(NB01)
    nb = corpus.with_answer(corpus._matrix('getattr(prep, "".join(reversed("xirtam_noitcaretni")))'), name=NB01,
                            gid="build_matrix")
    rebuilt, _ = asg.rebuild(nb, a)
    flags = integrity.static_flags(a, rebuilt)
    assert not [f for f in flags if f.startswith("integrity:")]
    assert any(f.startswith("suspicious code: looks up a course_lib attribute by a name computed") for f in flags)


# ---------------------------------------------------------------- what is not flagged

NOT_FLAGGED_04 = {
    "own implementation": (corpus.COUNTS_OWN, []),
    "self-check in an own cell": (corpus.COUNTS_OWN, [corpus.SELF_CHECK]),
    "alias never used by the answer": (corpus.COUNTS_OWN, [IMP + "tc = transition_counts"]),
    "helper only the top level uses": (corpus.COUNTS_OWN, ["def _ref(h, n):\n    return transition_counts(h, n)\n"
                                                           "print(_ref([np.array([1, 2])], 2))"]),
    "a parameter shadows the name": ("def count_transitions(histories, n_items, transition_counts=None):\n"
                                     "    C = np.zeros((n_items + 1, n_items + 1), dtype=np.int64)\n"
                                     "    return C", []),
    "the other exercise's reference": (corpus.COUNTS_OWN + "\n_unused = smoothed_probabilities", []),
    "rebound before use": (counts("tc"), [IMP + "tc = transition_counts\n"
                                          "def tc(h, n):\n    import scipy.sparse as sp\n"
                                          "    return sp.csr_matrix((n + 1, n + 1))"]),
}


@pytest.mark.parametrize("how", list(NOT_FLAGGED_04))
def test_legitimate_code_is_not_flagged(how):
    answer, cells = NOT_FLAGGED_04[how]
    assert flags_of(NB04, answer, "count_transitions", cells) == [], how


def test_a_dataframe_named_like_a_course_module_is_not_the_module():
    # 00_welcome's answer is `describe`; `data` is course_lib.data there, until the student rebinds it
    answer = "def describe(df):\n    d = df.describe()\n    return {'interactions': int(len(df))}"
    assert flags_of("00_welcome", answer, "describe", ["data = pd.DataFrame({'a': [1]})\nprint(data.describe())"]) == []
    assert flags_of("00_welcome", "def describe(data):\n    return data.describe()", "describe") == []
    # a course_lib attribute named like the answer is flagged even when it does not exist
    assert flags_of("00_welcome", "def describe(df):\n    return cl.data.describe(df)", "describe")


def test_allowed_helper_the_solution_uses_is_not_flagged():
    """07's inference_input: prep.pad_sequences is what the prose recommends (and the solution uses)."""
    answer = ("def inference_input(histories, max_len, mask_token):\n"
              "    rows = [np.append(np.asarray(h, dtype=np.int64)[-(max_len - 1):], mask_token) for h in histories]\n"
              "    return torch.from_numpy(prep.pad_sequences(rows, max_len))")
    assert flags_of(NB07, answer, "inference_input") == []
    cheat = ("from course_lib.models import bert4rec\n\ndef inference_input(histories, max_len, mask_token):\n"
             "    return bert4rec.mask_appended_inputs(histories, max_len, mask_token)")
    assert flags_of(NB07, cheat, "inference_input")


def test_09_cloze_mask_is_allowed_in_train_epoch_but_not_in_cloze_mask():
    a = load("09_lab")
    if not {"ex_cloze", "ex_train"} <= set(a.exercises.forbidden):
        pytest.skip("09's exercises changed")
    ex = a.exercises
    assert ex.forbids("ex_cloze", "course_lib.exercises.lab09:cloze_mask")
    assert not ex.forbids("ex_train", "course_lib.exercises.lab09:cloze_mask")
    assert not ex.forbids("ex_train", "course_lib.exercises.lab09:masked_cross_entropy")
    assert ex.forbids("ex_train", "course_lib.exercises.lab09:train_masked_epoch")


def test_09_build_and_train_must_use_the_students_own_train_epoch():
    """Exercise 6 trains with the student's train_epoch: the reference epoch and the library's trainer
    (which trains LabBERT4Rec, and so MyBERT4Rec, through the notebook's Cloze loss) are flagged there."""
    a = load("09_lab")
    if "ex_together" not in a.exercises.forbidden:
        pytest.skip("09's exercises changed")
    ex = a.exercises
    assert ex.forbids("ex_together", "course_lib.exercises.lab09:train_masked_epoch")
    assert ex.forbids("ex_together", "course_lib.train:train")
    assert not ex.forbids("ex_train", "course_lib.train:train")
    head = ("class MyBERT4Rec(LabBERT4Rec):\n    def __init__(self, n_items):\n        super().__init__(n_items)\n\n"
            "def build_and_train(split, epochs=20, seed=0):\n    model = MyBERT4Rec(split.n_items)\n")
    cheats = [head + "    from course_lib.train import train\n    train(model, split, epochs=epochs, seed=seed)\n"
                     "    return model.eval()",
              head + "    from course_lib.exercises import lab09\n"
                     "    data = torch.from_numpy(prep.pad_sequences(split.training_histories()[1:], 20))\n"
                     "    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)\n"
                     "    for _ in range(epochs):\n        lab09.train_masked_epoch(model, data, opt, 64, 0.3)\n"
                     "    return model.eval()"]
    for cheat in cheats:
        assert flags_of("09_lab", cheat, "ex_together"), cheat


@pytest.mark.parametrize("name", asg.discover())
def test_every_solution_is_clean(name):
    """No reference solution is flagged (integrity or suspicious code), so no allowed helper is."""
    a = load(name)
    nb = json.loads(a.source_path.read_text(encoding="utf-8"))
    rebuilt, _ = asg.rebuild(nb, a)
    assert integrity.static_flags(a, rebuilt) == []
    for cell in rebuilt["cells"]:
        if cell["metadata"].get("grader", {}).get("role") in ("answer", "student"):
            assert asg.static_flags(cell["source"]) == [], cell["source"][:200]


@pytest.mark.parametrize("name", asg.discover())
def test_references_are_real(name):
    """Every exercise's references resolve to course_lib functions, methods or classes (or a function
    of the notebook's own cells), and the tables name exercises that exist."""
    a = load(name)
    idx = integrity.course_index()
    for gid, targets in a.exercises.forbidden.items():
        for t in targets:
            assert idx.kind(t) in ("function", "method", "class", "notebook"), (gid, t, idx.kind(t))
    for table in (integrity.EXTRA_REFERENCES, integrity.ALLOWED_HELPERS):
        for gid, targets in table.get(name, {}).items():
            assert gid in a.exercises.forbidden, f"{name}: no answer cell `{gid}` any more: update the table"
            for t in targets:
                assert t.startswith("nb:") or idx.kind(t) in ("function", "method", "class"), t


def test_04_references():
    ex = load(NB04).exercises
    assert ex.forbidden["count_transitions"] == {"course_lib.models.markov:transition_counts"}
    assert ex.forbidden["smoothed_row"] == {"course_lib.models.markov:smoothed_probabilities"}
    assert load(NB04).references["test_count_transitions"] == {"course_lib.models.markov:transition_counts"}
    assert ex.watch(integrity.course_index()) == ["course_lib.models.markov:smoothed_probabilities",
                                                  "course_lib.models.markov:transition_counts"]


# ---------------------------------------------------------------- the grading run's records

def _dynamic(name, answer, gid, cells, records):
    a = load(name)
    nb = corpus.with_answer(answer, name=name, gid=gid)
    for src in reversed(cells):
        nb = corpus.add_cell(nb, src, after_gid=gid)
    rebuilt, _ = asg.rebuild(nb, a)
    steps = verdict.plan_steps(rebuilt, a)
    role_step = {}
    for k, (kind, key, src) in enumerate(steps):
        if kind == "cell":
            role_step.setdefault(key.split(":")[1], []).append(k)
        else:
            role_step.setdefault(kind, []).append(k)
    recs = [(t, ";".join(f"{role_step[r][0] if r in role_step else -1}/{q}" for r, q in frames))
            for t, frames in records]
    return integrity.dynamic_flags(a, rebuilt, steps, recs)


T = "course_lib.models.markov:transition_counts"


def test_records_from_the_answer_are_flagged():
    got = _dynamic(NB04, corpus.COUNTS_OWN, "count_transitions", [], [(T, [("answer", "count_transitions")])])
    assert len(got) == 1 and got[0].startswith("integrity: the answer `count_transitions` called course_lib's "
                                               "reference `transition_counts`") and "grading run" in got[0]


def test_records_through_helpers_and_runtime_code():
    # runtime-compiled code (-1), then a helper of the student's own cell, then the answer
    got = _dynamic(NB04, corpus.COUNTS_OWN, "count_transitions", ["def _h(h, n):\n    return h"],
                   [(T, [("runtime", "<module>"), ("student", "_h"), ("answer", "count_transitions")])])
    assert len(got) == 1 and "`count_transitions`" in got[0]
    # code compiled at run time, called straight by a test
    got = _dynamic(NB04, corpus.COUNTS_OWN, "count_transitions", [], [(T, [("runtime", "<lambda>"), ("visible", "x")])])
    assert len(got) == 1 and got[0].startswith("integrity: the submission called")


def test_records_not_judged():
    own = [corpus.SELF_CHECK]
    # the top level of the student's own cell (a self-check)
    assert _dynamic(NB04, corpus.COUNTS_OWN, "count_transitions", own, [(T, [("student", "<module>")])]) == []
    # a course cell reached it through code compiled at run time
    assert _dynamic(NB04, corpus.COUNTS_OWN, "count_transitions", [], [(T, [("runtime", "f"), ("plain", "<module>")])]) == []
    # the other exercise's reference from this answer
    assert _dynamic(NB04, corpus.COUNTS_OWN, "count_transitions", [],
                    [("course_lib.models.markov:smoothed_probabilities", [("answer", "count_transitions")])]) == []


def test_the_wrapper_reports_only_calls_from_notebook_code():
    from grading.verdict_main import _watched

    seen = []

    def audit(event, key, codes):
        seen.append((event, key, [c.co_name for c in codes]))

    w = _watched(lambda x: x + 1, "k", audit, sys._getframe)
    assert w(1) == 2 and seen == []            # called from this file: not reported
    assert w.__name__ == "<lambda>"
    code = compile("def answer(x):\n    return w(x)\nresult = answer(2)", "<cell 3:answer>", "exec")
    ns = {"w": w}
    exec(code, ns)
    assert ns["result"] == 3
    # the innermost non-file frames: the answer, then the cell that called it (a test runner that
    # itself runs from compiled strings, as pytest-xdist's workers do, adds its own frames after them)
    assert len(seen) == 1 and seen[0][:2] == ("grader.reference", "k"), seen
    assert seen[0][2][:2] == ["answer", "<module>"], seen
