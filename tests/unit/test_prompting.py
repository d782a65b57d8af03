"""course_lib.llm.prompting on small inputs: templates, the click task's invariants, the
per-impression metrics against brute force, and the prompt scorer on a tiny random BERT
(MiniLM's vocabulary, 2 layers of width 32), so nothing here waits on MiniLM."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import metrics
from course_lib.llm import prompting as P
from course_lib.llm import scoring as S

pytestmark = pytest.mark.unit


# ----------------------------------------------------------------------------- templates

def test_twelve_templates_with_their_answer_words():
    assert len(P.TEMPLATES) == 12
    assert {(t.kind, t.perspective) for t in P.TEMPLATES.values()} == set(itertools.product(P.KINDS, P.PERSPECTIVES))
    for name, t in P.TEMPLATES.items():
        assert name == t.name
        assert t.text.count(P.MASK) == 1 and t.text.count(P.USER) == 1 and t.text.count(P.CANDIDATE) == 1
        assert t.answers == P.ANSWERS[t.perspective]
        assert bool(t.soft_tokens) == (t.kind != "discrete"), name
    assert len(P.TEMPLATES["continuous-emotion"].soft_tokens) == 9
    assert len(P.TEMPLATES["hybrid-utility"].soft_tokens) == 6
    assert len(P.make_templates(5)["continuous-action"].soft_tokens) == 15
    with pytest.raises(ValueError):
        P.make_templates(0)


def test_fill_template_and_its_errors():
    t = "<candidate> is [MASK] to <user>"
    assert P.fill_template(t, "Fargo (1996)", "Heat (1995)") == "Heat (1995) is [MASK] to Fargo (1996)"
    assert P.fill_template(P.TEMPLATES["discrete-relevance"], "a", "b") == "b is [MASK] to a"
    # a title holding a slot's name is not substituted a second time
    assert P.fill_template(t, "<candidate>", "x") == "x is [MASK] to <candidate>"
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        P.fill_template("<candidate> is good for <user>", "a", "b")
    with pytest.raises(ValueError, match="exactly one"):
        P.fill_template("[MASK] <candidate> [MASK] <user>", "a", "b")
    with pytest.raises(ValueError, match="<user>"):
        P.fill_template("<candidate> is [MASK]", "a", "b")
    with pytest.raises(ValueError, match="<candidate>"):
        P.fill_template("<user> <user> [MASK] <candidate>", "a", "b")


# ----------------------------------------------------------------------------- the click task

def _toy_data(n_users=40, n_items=60, per_user=15, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    pop = np.linspace(3, 0.2, n_items)
    for u in range(1, n_users + 1):
        its = rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False, p=pop / pop.sum())
        rows += [(u, int(i), 4.0, 1000 * u + t) for t, i in enumerate(its)]
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    items = pd.DataFrame({"item": np.arange(1, n_items + 1), "title": [f"Movie {i}" for i in range(1, n_items + 1)],
                          "year": 1990, "genres": [["Drama"]] * n_items})
    return inter, items


@pytest.mark.parametrize("setting", P.SETTINGS)
def test_impressions_invariants(setting):
    inter, items = _toy_data()
    task = P.build_click_task(inter, items, setting, n_train=20, n_valid=8, n_test=None, n_neg=4, seed=3)
    imp = task.impressions
    seen = inter.groupby("user")["item"].apply(set)
    assert (imp.groupby("impression")["label"].sum() == 1).all(), "exactly one clicked item per impression"
    assert (imp.groupby("impression").size() == 5).all()
    assert (imp.groupby("impression")["item"].nunique() == 5).all()
    assert imp.groupby("impression")["user"].nunique().eq(1).all()
    assert imp.groupby("user")["stage"].nunique().eq(1).all(), "train, valid and test users are disjoint"
    assert set(imp["stage"]) == {"train", "valid", "test"}
    for row in imp.itertuples():
        if row.label:
            assert row.item in seen[row.user], "the click is the user's own interaction"
        else:
            assert row.item not in seen[row.user], "a negative was never seen by the user"
    # the history precedes the click in time
    for i, g in imp.groupby("impression"):
        user, click = g["user"].iloc[0], g.loc[g["label"] == 1, "item"].iloc[0]
        seq = inter[inter["user"] == user].sort_values("timestamp")["item"].tolist()
        assert set(task.history[i]) <= set(seq[: seq.index(click)])
        assert len(task.history[i]) >= 3
    if setting == "cold":
        cold = set(task.cold_items.tolist())
        assert len(cold) == 12
        ev = imp[imp["stage"] != "train"]
        assert ev["item"].isin(cold).all(), "cold impressions hold cold items only"
        assert not imp[imp["stage"] == "train"]["item"].isin(cold).any()
        assert not any(set(h) & cold for h in task.history.values()), "no history mentions a cold item"
        assert (task.popularity.loc[list(cold)] == 0).all()
        auc = P.evaluate(task, "test", P.popularity_scores(task, task.frame("test")))["auc"]
        assert auc == 0.5, "popularity ties on cold items by construction"
    else:
        assert len(task.cold_items) == 0


def test_click_task_is_seeded_and_checks_its_arguments():
    inter, items = _toy_data()
    a = P.build_click_task(inter, items, "warm_pop", n_train=20, n_valid=5, n_test=10, seed=1)
    b = P.build_click_task(inter, items, "warm_pop", n_train=20, n_valid=5, n_test=10, seed=1)
    c = P.build_click_task(inter, items, "warm_pop", n_train=20, n_valid=5, n_test=10, seed=2)
    pd.testing.assert_frame_equal(a.impressions, b.impressions)
    assert a.history == b.history
    assert not a.impressions.equals(c.impressions)
    with pytest.raises(ValueError, match="setting"):
        P.build_click_task(inter, items, "hot")
    with pytest.raises(ValueError, match="users"):
        P.build_click_task(inter, items, "cold", n_train=30, n_valid=10, n_test=10)
    with pytest.raises(ValueError, match="cold_frac"):
        P.build_click_task(inter, items, "cold", n_train=10, cold_frac=1.0)


def test_prompts_follow_the_template_and_fit_the_token_budget():
    inter, items = _toy_data()
    task = P.build_click_task(inter, items, "cold", n_train=20, n_valid=8, n_test=None, seed=0)
    f = task.frame("test").head(5)
    p = task.prompts(P.TEMPLATES["discrete-relevance"], f)
    imp, item = f["impression"].iloc[0], f["item"].iloc[0]
    hist = "; ".join(f"Movie {i} (1990)" for i in task.history[imp])
    assert p[0] == f"Movie {item} (1990); genres: drama is [MASK] to {hist}"

    class Tok:  # one token per word
        def tokenize(self, text):
            return text.split()
    short = task.prompts(P.TEMPLATES["discrete-action"], f, tokenizer=Tok(), max_length=24)
    long = task.prompts(P.TEMPLATES["discrete-action"], f)
    assert all(s.endswith("[MASK]") for s in short)
    assert all(len(s.split()) + 2 <= 24 or s.count(";") == 0 for s in short)
    assert sum(map(len, short)) < sum(map(len, long)), "the oldest titles were dropped"


# ----------------------------------------------------------------------------- metrics

def _brute(labels, scores, k):
    """Average over every order of tied items: reciprocal rank and NDCG@k of the positive."""
    idx = list(range(len(scores)))
    rrs, ndcgs = [], []
    for perm in itertools.permutations(idx):
        ranked = sorted(perm, key=lambda i: -scores[i])  # stable: ties keep the permutation's order
        rank = ranked.index(int(np.argmax(labels))) + 1
        rrs.append(1 / rank)
        ndcgs.append(metrics.ndcg_at_k(ranked, {int(np.argmax(labels))}, k))
    return np.mean(rrs), np.mean(ndcgs)


def test_impression_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    rows, scores = [], []
    for imp in range(12):
        n = int(rng.integers(2, 6))
        lab = np.zeros(n, int)
        lab[rng.integers(n)] = 1
        s = rng.integers(0, 3, n).astype(float)  # many ties
        rows += [(imp, int(x)) for x in lab]
        scores += list(s)
    frame = pd.DataFrame(rows, columns=["impression", "label"])
    out = P.impression_metrics(frame, scores, ks=(2, 5))
    for imp, g in frame.groupby("impression"):
        lab, s = g["label"].to_numpy(), np.asarray(scores)[g.index]
        row = out.set_index("impression").loc[imp]
        assert row["auc"] == pytest.approx(S.auc(lab, s))
        rr, nd2 = _brute(lab, s, 2)
        _, nd5 = _brute(lab, s, 5)
        assert row["mrr"] == pytest.approx(rr)
        assert row["ndcg2"] == pytest.approx(nd2)
        assert row["ndcg5"] == pytest.approx(nd5)


def test_impression_metrics_edge_cases():
    frame = pd.DataFrame({"impression": [0] * 5, "label": [0, 0, 1, 0, 0]})
    best = P.impression_metrics(frame, [0, 0, 9, 0, 0]).iloc[0]
    assert best["auc"] == best["mrr"] == best["ndcg5"] == best["ndcg10"] == 1.0
    worst = P.impression_metrics(frame, [5, 5, 1, 5, 5]).iloc[0]
    assert worst["auc"] == 0 and worst["mrr"] == pytest.approx(0.2)
    assert worst["ndcg5"] == pytest.approx(1 / math.log2(6))
    const = P.impression_metrics(frame, np.zeros(5)).iloc[0]
    assert const["auc"] == 0.5 and const["mrr"] == pytest.approx(np.mean(1 / np.arange(1, 6)))
    with pytest.raises(ValueError, match="exactly one"):
        P.impression_metrics(pd.DataFrame({"impression": [0, 0], "label": [1, 1]}), [1, 2])
    with pytest.raises(ValueError, match="scores"):
        P.impression_metrics(frame, [1, 2])
    s = P.summarize(P.impression_metrics(frame, [0, 0, 9, 0, 0]))
    assert s["auc"] == s["auc_lo"] == s["auc_hi"] == 1.0


def test_baselines_and_ensembles():
    inter, items = _toy_data()
    task = P.build_click_task(inter, items, "warm_uniform", n_train=20, n_valid=5, n_test=15, seed=0)
    f = task.frame("test")
    pop = P.popularity_scores(task, f)
    assert pop.shape == (len(f),) and (pop >= 0).all()
    vec = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 8)), index=np.arange(1, 61))
    cos = P.history_cosine(task, f, vec)
    imp, item = f["impression"].iloc[0], f["item"].iloc[0]
    v = vec.to_numpy() / np.linalg.norm(vec.to_numpy(), axis=1, keepdims=True)
    u = v[np.asarray(task.history[imp]) - 1].mean(0)
    assert cos[0] == pytest.approx(u @ v[item - 1] / np.linalg.norm(u))
    probs = {"discrete-relevance": np.array([0.2, 0.6]), "discrete-action": np.array([0.4, 0.2]),
             "continuous-relevance": np.array([0.9, 0.9])}
    np.testing.assert_allclose(P.ensemble_by_kind(probs, "discrete"), [0.3, 0.4])
    np.testing.assert_allclose(P.ensemble_by_kind(probs, "continuous"), [0.9, 0.9])
    with pytest.raises(ValueError, match="no hybrid"):
        P.ensemble_by_kind(probs, "hybrid")
    with pytest.raises(ValueError, match="kind"):
        P.ensemble_by_kind(probs, "soft")


# ----------------------------------------------------------------------------- the scorer, on a tiny BERT

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer, BertConfig, BertModel

    from course_lib.llm.models import ModelUnavailable, encoder_path
    try:
        src = encoder_path()
    except ModelUnavailable:
        pytest.skip("MiniLM's package (for its vocabulary) is not installed")
    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=256, initializer_range=0.2)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _scorer(path, name="continuous-relevance", **kw):
    cfg = P.PromptConfig(**{"batch_size": 4, "max_length": 64, **kw})
    return P.PromptScorer(P.TEMPLATES[name], cfg, encoder_path=path)


def test_verbalizer_scores_match_hand_computed_logits(tiny_bert):
    sc = _scorer(tiny_bert, "hybrid-emotion")
    prompts = [P.fill_template(sc.template, "Fargo (1996); Heat (1995)", f"Movie {i}; genres: drama") for i in range(3)]
    emb = sc.encoder.get_input_embeddings().weight
    ids = sc.tokenizer.convert_tokens_to_ids(["interesting", "boring"])
    assert sc.answer_ids == ids
    with torch.no_grad():
        h = sc.mask_states(prompts)
        logits = (h @ emb[ids].T).numpy()
        full = sc.vocab_logits(prompts).numpy()
    np.testing.assert_allclose(full[:, ids], logits, rtol=1e-5, atol=1e-6)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(sc.predict(prompts), e[:, 0] / e.sum(1), rtol=1e-5)
    np.testing.assert_allclose(sc.predict(prompts), S.verbalizer_probs(full, ids)[:, 0], rtol=1e-5)
    # the zero-shot reading skips the transform
    with torch.no_grad():
        raw = sc.mask_states(prompts, head=False)
    z = (raw @ emb[ids].T).numpy()
    np.testing.assert_allclose(sc.predict(prompts, head=False), 1 / (1 + np.exp(z[:, 1] - z[:, 0])), rtol=1e-5)


def test_soft_tokens_are_trainable_inputs(tiny_bert):
    sc = _scorer(tiny_bert, "continuous-action")
    assert sc.soft.shape == (9, 32)
    ids = sc.tokenizer(["[P1] a [P9] [MASK]"], return_tensors="pt")["input_ids"]
    x = sc._embed(ids)
    assert torch.equal(x[0, 1], sc.soft[0]) and torch.equal(x[0, 3], sc.soft[8])
    assert torch.equal(x[0, 2], sc.encoder.get_input_embeddings().weight[ids[0, 2]])
    with pytest.raises(ValueError, match="tuning"):
        _scorer(tiny_bert, tuning="lora")


def test_a_tiny_training_run_lowers_the_loss_and_prompt_tuning_freezes_the_encoder(tiny_bert):
    prompts = [P.fill_template(P.TEMPLATES["continuous-relevance"], "Heat (1995)", f"Movie {i}") for i in range(8)]
    labels = [1, 0] * 4
    sc = _scorer(tiny_bert, head_lr=1e-2, lr=1e-3, epochs=30, seed=0).fit(prompts, labels, progress=False)
    assert len(sc.losses) == 60
    assert np.mean(sc.losses[-6:]) < np.mean(sc.losses[:6]) - 0.05, sc.losses
    full_params = sc.trainable_parameters()
    pt = _scorer(tiny_bert, tuning="prompt", max_steps=3, seed=0)
    before = {k: v.clone() for k, v in pt.encoder.state_dict().items()}
    soft0, lin0 = pt.soft.detach().clone(), pt.transform[0].weight.detach().clone()
    pt.fit(prompts, labels, progress=False)
    assert len(pt.losses) == 3, "max_steps caps the epochs"
    assert all(torch.equal(before[k], v) for k, v in pt.encoder.state_dict().items()), "the encoder stays frozen"
    assert not torch.equal(soft0, pt.soft) and not torch.equal(lin0, pt.transform[0].weight)
    assert pt.trainable_parameters() == 9 * 32 + 32 * 32 + 32 + 2 * 32 < full_params
    with pytest.raises(ValueError, match="labels"):
        pt.fit(prompts, labels[:3], progress=False)


def test_training_is_reproducible_from_the_seed(tiny_bert):
    prompts = [P.fill_template(P.TEMPLATES["discrete-utility"], "Heat (1995)", f"Movie {i}") for i in range(6)]
    labels = [1, 0, 0, 1, 0, 0]
    runs = [_scorer(tiny_bert, "discrete-utility", max_steps=3, seed=s).fit(prompts, labels, progress=False)
            for s in (7, 7, 8)]
    assert runs[0].losses == runs[1].losses
    np.testing.assert_array_equal(runs[0].predict(prompts), runs[1].predict(prompts))
    assert runs[0].losses != runs[2].losses


def test_a_truncated_mask_is_a_clear_error(tiny_bert):
    sc = _scorer(tiny_bert, "discrete-action", max_length=8)
    long = P.fill_template(sc.template, "a very long history " * 10, "Heat")
    with pytest.raises(ValueError, match="lost its"):
        sc.predict([long])
