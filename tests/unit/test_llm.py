"""course_lib.llm on small inputs: verbalizer quirks, scores from logits, cosine top-k, the text
recommenders' contract, cold-start splits and loading errors. No test generates text."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import metrics, prep
from course_lib.llm import models as M
from course_lib.llm import scoring as S
from course_lib.llm import verbalize as V
from course_lib.llm.encoder import TextKNN, TwoTower, TwoTowerConfig, cosine_topk

pytestmark = pytest.mark.unit


# ----------------------------------------------------------------------------- verbalization

@pytest.mark.parametrize("raw, clean", [
    ("Usual Suspects, The", "The Usual Suspects"),
    ("Postino, Il", "Il Postino"),
    ("Misérables, Les", "Les Misérables"),
    ("Horseman on the Roof, The (Hussard sur le toit, Le)", "The Horseman on the Roof (Le Hussard sur le toit)"),
    ("Englishman Who Went Up a Hill, But Came Down a Mountain, The",
     "The Englishman Who Went Up a Hill, But Came Down a Mountain"),
    ("Seven (Se7en)", "Seven (Se7en)"),
    ("Toy Story", "Toy Story"),
    ("  Fargo  ", "Fargo"),
    ("unknown", V.UNKNOWN_TITLE), ("unkonwn", V.UNKNOWN_TITLE), ("", V.UNKNOWN_TITLE), (None, V.UNKNOWN_TITLE),
    (float("nan"), V.UNKNOWN_TITLE),
])
def test_clean_title(raw, clean):
    assert V.clean_title(raw) == clean


@pytest.mark.parametrize("year, out", [(1995, 1995), ("1995", 1995), (1995.0, 1995), ("V", None), (None, None),
                                       (pd.NA, None), (3000, None), ("", None)])
def test_clean_year(year, out):
    assert V.clean_year(year) == out


def test_item_text_and_guards():
    assert V.item_text("Usual Suspects, The", 1995, ["Crime", "Thriller"]) == \
        "The Usual Suspects (1995); genres: crime, thriller"
    assert V.item_text("Usual Suspects, The", "V", ["Crime"], with_genres=False) == "The Usual Suspects"
    assert V.item_text("unknown", None, ["unknown"]) == V.UNKNOWN_TITLE


def test_item_texts_disambiguates_duplicates_and_keeps_ids():
    items = pd.DataFrame({"item": [246, 268, 1, 267], "title": ["Chasing Amy", "Chasing Amy", "Toy Story", "unknown"],
                          "year": [1997, 1997, 1995, None], "genres": [["Drama"], ["Drama"], ["Comedy"], []]})
    s = V.item_texts(items)
    assert list(s.index) == [246, 268, 1, 267]
    assert s.is_unique, s
    assert s[246].endswith("[item 246]") and s[268].endswith("[item 268]")
    assert s[1] == "Toy Story (1995); genres: comedy"
    assert V.item_texts(items, disambiguate=False)[246] == V.item_texts(items, disambiguate=False)[268]
    with pytest.raises(ValueError, match="missing"):
        V.item_texts(items.drop(columns="title"))


def test_user_profile_and_histories():
    p = V.user_profile(24, "M", "technician", liked=["Star Wars", "Fargo"], disliked=["Jaws"])
    assert p == "A 24-year-old man who works as a technician. Liked: Star Wars, Fargo. Disliked: Jaws."
    assert V.user_profile(18, "F", "student").startswith("An 18-year-old woman who is a student")
    assert V.user_profile(liked=["Usual Suspects, The"]) == "Liked: The Usual Suspects."
    assert "Liked: a, b." in V.user_profile(30, "F", "other", liked=list("abcdef"), max_titles=2)
    with pytest.raises(ValueError, match="nothing to describe"):
        V.user_profile()
    assert V.interaction_text("Matrix, The", 5) == "rated The Matrix 5/5"
    assert V.interaction_text("Matrix, The") == "watched The Matrix"
    assert V.history_text(["a", "b", "c"], max_items=2) == "b; c"
    assert V.history_text(["Net, The"], [3.5]) == "rated The Net 3.5/5"
    with pytest.raises(ValueError, match="empty"):
        V.history_text([])
    with pytest.raises(ValueError, match="ratings"):
        V.history_text(["a"], [1, 2])


# ----------------------------------------------------------------------------- scores from logits

def test_verbalizer_probs_match_hand_computation():
    logits = torch.tensor([[0.0, 2.0, -1.0, 5.0], [1.0, 1.0, 1.0, 1.0]])
    p = S.verbalizer_probs(logits, [1, 2])
    e = np.exp([2.0, -1.0])
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(p[1], [0.5, 0.5])
    assert np.allclose(p.sum(1), 1)
    # other vocabulary entries do not matter
    logits2 = logits.clone()
    logits2[:, 3] = -100
    np.testing.assert_allclose(S.verbalizer_probs(logits2, [1, 2]), p, rtol=1e-6)
    assert S.verbalizer_probs(logits[0], [1, 2]).shape == (1, 2)
    with pytest.raises(ValueError, match="outside"):
        S.verbalizer_probs(logits, [1, 9])
    with pytest.raises(ValueError, match="two answer words"):
        S.verbalizer_probs(logits, [1])


def test_ensemble_and_auc():
    a, b = np.array([0.2, 0.8]), np.array([0.6, 0.4])
    np.testing.assert_allclose(S.ensemble([a, b]), [0.4, 0.6])
    np.testing.assert_allclose(S.ensemble([a, b], [3, 1]), [0.3, 0.7])
    with pytest.raises(ValueError):
        S.ensemble([a, np.ones(3)])
    with pytest.raises(ValueError):
        S.ensemble([])
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        y[:2] = [0, 1]
        s = rng.integers(0, 5, 30).astype(float)  # ties on purpose
        pos, neg = s[y == 1], s[y == 0]
        brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
        assert S.auc(y, s) == pytest.approx(brute)
    assert S.auc([1, 0], [1.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="positive"):
        S.auc([1, 1], [0.3, 0.2])


class _Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def encode(self, text, add_special_tokens=False):
        return [self.vocab[w] for w in text.replace(" ", " _").split() if w] if text.strip() else []


def test_answer_token_ids():
    tok = _Tok({"Yes": 5, "No": 6, "_Yes": 7, "_No": 8, "maybe": 1, "_not": 2})
    assert S.answer_token_ids(tok, ["Yes", "No"]) == [5, 6]
    assert S.answer_token_ids(tok, ["Yes", "No"], leading_space=True) == [7, 8]
    with pytest.raises(ValueError, match="not one"):
        S.answer_token_ids(tok, ["maybe not"])


# ----------------------------------------------------------------------------- embeddings and recommenders

def test_cosine_topk_against_brute_force():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(30, 8)).astype(np.float32)
    q = rng.normal(size=(5, 8)).astype(np.float32)
    exclude = [[1, 2], [], [5], list(range(1, 20)), [29]]
    top = cosine_topk(q, m, k=4, exclude=exclude)
    mn = m / np.linalg.norm(m, axis=1, keepdims=True)
    for r in range(5):
        sims = mn @ (q[r] / np.linalg.norm(q[r]))
        allowed = [i for i in range(1, 30) if i not in exclude[r]]
        expect = sorted(allowed, key=lambda i: -sims[i])[:4]
        assert list(top[r]) == expect
        assert 0 not in top[r]
    with pytest.raises(ValueError, match="dimension"):
        cosine_topk(q[:, :3], m)


def _toy_split():
    rows = []
    rng = np.random.default_rng(0)
    for u in range(1, 41):
        items = rng.choice(np.arange(1, 31), size=8, replace=False)
        rows += [(u, int(i), 4.0, t) for t, i in enumerate(items)]
    return prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]))


def test_text_models_follow_the_course_interface_and_score_cold_items():
    split = _toy_split()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(split.n_items + 1, 16)).astype(np.float32)
    emb[0] = 0
    cold_split, cold = prep.cold_item_split(split, 0.2, seed=0)
    assert not cold_split.train["item"].isin(cold).any() and not cold_split.valid["item"].isin(cold).any()
    assert len(cold_split.test) == len(split.test)
    cu, wu = prep.cold_test_users(cold_split, cold)
    assert len(cu) + len(wu) == cold_split.test["user"].nunique() and not set(cu) & set(wu)
    for model in (TextKNN(emb), TwoTower(emb, TwoTowerConfig(epochs=2, batch_size=32, dim=8, hidden=16))):
        model.fit(cold_split, progress=False) if isinstance(model, TwoTower) else model.fit(cold_split)
        users = cold_split.test["user"].to_numpy()
        hist = cold_split.history("test")
        s = np.asarray(model.score(users, [hist[u] for u in users]))
        assert s.shape == (len(users), split.n_items + 1)
        assert np.isfinite(s[:, 1:]).all(), "every item, cold ones too, gets a finite score from its text"
        recs = model.recommend(users, [hist[u] for u in users], k=5)
        for u, r in zip(users, recs):
            assert not set(r.tolist()) & set(hist[u].tolist()) and 0 not in r
        res = metrics.evaluate(model, cold_split, ks=(5,))
        assert 0 <= res["HR@5"] <= 1


def test_text_knn_ranks_the_nearest_text_first():
    emb = np.zeros((5, 2), dtype=np.float32)
    emb[1], emb[2], emb[3], emb[4] = [1, 0], [0.9, 0.1], [0, 1], [-1, 0]
    s = TextKNN(emb).score(np.array([1]), [np.array([1])])
    assert np.argsort(-s[0])[:3].tolist() == [1, 2, 3]


def test_two_tower_is_reproducible_from_its_seed():
    split = _toy_split()
    emb = np.random.default_rng(0).normal(size=(split.n_items + 1, 16)).astype(np.float32)
    runs = [TwoTower(emb, TwoTowerConfig(epochs=2, batch_size=32, seed=3)).fit(split, progress=False).losses
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_cold_item_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="frac"):
        prep.cold_item_split(_toy_split(), 1.0)


# ----------------------------------------------------------------------------- loading

def test_unknown_model_offline_fails_at_once_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(M.ModelUnavailable, match="offline"):
        M.load_lm("someone/some-7b-model")
    with pytest.raises(M.ModelUnavailable, match="offline"):
        M.load_encoder("someone/some-encoder")


def test_missing_weights_package_names_the_install(monkeypatch):
    real = M.importlib.util.find_spec
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name, *a: None if name == M.LM_PACKAGE else real(name, *a))
    with pytest.raises(M.ModelUnavailable, match="make llm"):
        M.gguf_path()


def test_dtype_policy():
    assert M.pick_dtype(torch.device("cpu")) == torch.float32
    assert M.pick_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16


def test_random_and_restricted_baselines():
    from course_lib.models.random import RandomScores, Restricted
    split = _toy_split()
    rnd = RandomScores(seed=1).fit(split)
    users = split.test["user"].to_numpy()
    hist = split.history("test")
    a, b = rnd.score(users, [hist[u] for u in users]), rnd.score(users, [hist[u] for u in users])
    assert np.array_equal(a, b) and np.isneginf(a[:, 0]).all()
    allowed = [3, 5, 7]
    r = Restricted(rnd, allowed)
    s = r.score(users, [hist[u] for u in users])
    assert np.isfinite(s[:, allowed]).all() and np.isneginf(np.delete(s, allowed, axis=1)).all()
    for row in r.recommend(users, [hist[u] for u in users], k=5):
        assert set(row[row > 0].tolist()) <= set(allowed)
    with pytest.raises(ValueError, match="allowed"):
        Restricted(rnd, [0])


def test_history_vectors_match_a_plain_loop():
    from course_lib.llm.encoder import _history_vectors
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(40, 6)).astype(np.float32)
    hists = [rng.integers(1, 40, size=int(rng.integers(0, 30))) for _ in range(50)]
    got = _history_vectors(hists, emb, recent=7, decay=0.8, chunk=8)
    for r, h in enumerate(hists):
        h = h[-7:]
        if len(h) == 0:
            assert not got[r].any()
            continue
        w = 0.8 ** np.arange(len(h) - 1, -1, -1)
        np.testing.assert_allclose(got[r], (w[:, None] * emb[h]).sum(0) / w.sum(), rtol=1e-5, atol=1e-6)


def test_cross_encoder_score_puts_the_reranked_short_list_first():
    """score() = the retriever's top-N in re-ranked order, above every other item (scored once)."""
    from course_lib.llm.encoder import CrossEncoder
    split = _toy_split()

    class Fixed(TextKNN):
        calls = 0

        def score(self, users, histories):
            Fixed.calls += 1
            return super().score(users, histories)

    emb = np.random.default_rng(0).normal(size=(split.n_items + 1, 8)).astype(np.float32)
    ce = CrossEncoder.__new__(CrossEncoder)          # no MiniLM: re-ranking reverses the list
    ce.retriever, ce.candidates, ce.n_items = Fixed(emb), 5, split.n_items
    ce.rerank = lambda histories, short: np.asarray(short)[:, ::-1]
    users = split.test["user"].to_numpy()[:4]
    hist = split.history("test")
    h = [hist[u] for u in users]
    s = ce.score(users, h)
    assert Fixed.calls == 1
    short = Fixed(emb).recommend(users, h, k=5)
    for r in range(len(users)):
        top = np.argsort(-s[r], kind="stable")[:5]
        assert list(top) == list(short[r][::-1])
