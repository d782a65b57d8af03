"""metrics.evaluate against a brute-force reference on random cases, plus the per-list metrics."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import metrics, prep
from course_lib.models.base import Recommender

pytestmark = pytest.mark.unit


class FixedScores(Recommender):
    """Returns a given score matrix row per user id (tests only)."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float32)
        self.n_items = self.table.shape[1] - 1

    def score(self, users, histories):
        return self.table[np.asarray(users)]


def random_split(rng, n_users=30, n_items=25, max_hist=12, multi=False, ties=False, repeats=False):
    rows = []
    t = 0
    for u in range(1, n_users + 1):
        n = rng.integers(3, max_hist)
        for i in rng.choice(np.arange(1, n_items + 1), size=n, replace=repeats):
            rows.append((u, int(i), 4.0, int(rng.integers(0, 10_000)) if multi else t))
            t += 1
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    split = prep.leave_one_out(df) if not multi else prep.temporal_split(df, 0.2, 0.3)
    table = rng.normal(size=(split.n_users + 1, split.n_items + 1))
    if ties:
        table = np.round(table, 0)  # many exact ties
    return split, table


def brute_force(split, table, stage, k):
    """Per-user metrics by sorting every candidate list, ties broken against the relevant items.

    Candidates: the items the user has not seen. A relevant item seen before (a repeat) is in
    no list: a miss, ranked below every negative for AUC.
    """
    hist = split.history(stage)
    out = []
    for u, rel in split.targets(stage).groupby("user")["item"]:
        rel = set(rel)
        seen = set(hist[u])
        cands = [i for i in range(1, split.n_items + 1) if i not in seen]
        # sort by score descending; among equal scores non-relevant items first (pessimistic)
        ranked = sorted(cands, key=lambda i: (-table[u, i], i in rel))
        n_neg = sum(1 for i in cands if i not in rel)
        neg_ranks = [n_neg if r in seen else sum(1 for j in cands if j not in rel and table[u, j] >= table[u, r])
                     for r in rel]
        out.append({
            "HR": metrics.hit_at_k(ranked, rel, k),
            "NDCG": metrics.ndcg_at_k(ranked, rel, k),
            "Recall": metrics.recall_at_k(ranked, rel, k),
            "Precision": metrics.precision_at_k(ranked, rel, k),
            "MRR": metrics.reciprocal_rank(ranked, rel),
            "AUC": float(np.mean([1 - r / n_neg for r in neg_ranks])),
        })
    return pd.DataFrame(out).mean()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("multi,ties", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("repeats", [False, True])
def test_full_ranking_matches_brute_force(seed, multi, ties, repeats):
    rng = np.random.default_rng(seed)
    split, table = random_split(rng, multi=multi, ties=ties, repeats=repeats)
    k = int(rng.integers(1, 8))
    got = metrics.evaluate(FixedScores(table), split, "test", ks=(k,), batch_size=7)
    want = brute_force(split, table, "test", k)
    for name in ["HR", "NDCG", "Recall", "Precision"]:
        assert got[f"{name}@{k}"] == pytest.approx(want[name], abs=1e-9), name
    assert got["MRR"] == pytest.approx(want["MRR"], abs=1e-9)
    assert got["AUC"] == pytest.approx(want["AUC"], abs=1e-9)


def test_ties_count_against_the_model():
    rng = np.random.default_rng(0)
    split, _ = random_split(rng)
    constant = np.ones((split.n_users + 1, split.n_items + 1))
    res = metrics.evaluate(FixedScores(constant), split, ks=(10,))
    assert res["HR@10"] == 0.0 and res["NDCG@10"] == 0.0
    assert res["AUC"] == 0.0


def test_perfect_model_and_seen_items_excluded():
    rng = np.random.default_rng(1)
    split, table = random_split(rng)
    table = np.zeros_like(table)
    hist = split.history("test")
    for u, i in split.test[["user", "item"]].itertuples(index=False):
        table[u, hist[u]] = 100.0  # seen items score highest: must be ignored
        table[u, i] = 50.0
    res = metrics.evaluate(FixedScores(table), split, ks=(1,))
    assert res["HR@1"] == 1.0 and res["NDCG@1"] == 1.0 and res["MRR"] == 1.0


def test_sampled_ranking_uses_only_unseen_negatives_and_is_easier():
    rng = np.random.default_rng(2)
    split, table = random_split(rng, n_users=40, n_items=200, max_hist=30)
    full = metrics.evaluate(FixedScores(table), split, ks=(10,))
    samp = metrics.evaluate(FixedScores(table), split, ks=(10,), sampled=20, seed=3)
    assert samp["HR@10"] >= full["HR@10"]
    # reproducible with the same seed
    again = metrics.evaluate(FixedScores(table), split, ks=(10,), sampled=20, seed=3)
    assert again == samp


def test_sample_negatives_excludes_seen_and_relevant():
    rng = np.random.default_rng(0)
    seen = np.zeros((3, 11), dtype=bool)
    seen[:, [1, 2, 3]] = True
    rel = np.array([[4], [5], [6]])
    negs = metrics.sample_negatives(seen, rel, 5, 10, None, rng)
    assert negs.shape == (3, 5)
    for b in range(3):
        assert not set(negs[b]) & {0, 1, 2, 3, int(rel[b, 0])}
        assert len(set(negs[b])) == 5
    pop = np.zeros(11)
    pop[[7, 8, 9, 10]] = 1.0
    pop[4:7] = 1.0
    with pytest.raises(ValueError, match="unseen items"):
        metrics.sample_negatives(seen, rel, 8, 10, None, rng)


def test_per_list_metrics_hand_computed():
    ranked = [5, 3, 9, 1]
    assert metrics.hit_at_k(ranked, {9}, 2) == 0.0 and metrics.hit_at_k(ranked, {9}, 3) == 1.0
    assert metrics.ndcg_at_k(ranked, {3}, 10) == pytest.approx(1 / math.log2(3))
    assert metrics.ndcg_at_k(ranked, {5, 9}, 3) == pytest.approx((1 + 1 / 2) / (1 + 1 / math.log2(3)))
    assert metrics.ndcg_at_k(ranked, set(), 3) == 0.0
    assert metrics.precision_at_k(ranked, {5, 1}, 4) == 0.5
    assert metrics.recall_at_k(ranked, {5, 7}, 4) == 0.5
    assert metrics.reciprocal_rank(ranked, {1}) == 0.25
    with pytest.raises(ValueError):
        metrics.ndcg_at_k(ranked, {1}, 0)


def test_per_list_metrics_count_a_repeated_item_once():
    """The reported case, then the rule: a repeat is a wasted slot, never a second hit."""
    assert metrics.ndcg_at_k([11, 11, 11, 9], {11}, 4) == 1.0
    assert metrics.recall_at_k([11, 11, 11, 9], {11}, 4) == 1.0
    assert metrics.precision_at_k([11, 11, 11, 9], {11}, 4) == 0.25
    assert metrics.ndcg_at_k([3, 11, 11, 9], {11, 9}, 4) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))  # 9 keeps its own slot (4th)
    assert metrics.dcg_at_k([5, 5], {5}, 2) == 1.0


@pytest.mark.parametrize("seed", range(200))
def test_per_list_metrics_stay_in_unit_interval_with_repeats(seed):
    """Random lists with repeated items (and -1 fills): every metric in [0, 1], and equal to the same
    metric on the list with its repeats replaced by an item that is never relevant."""
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(1, 15))
    ranked = rng.integers(-1, n_items + 1, size=int(rng.integers(1, 20))).tolist()
    relevant = set(rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(0, n_items + 1)), replace=False).tolist())
    k = int(rng.integers(1, 25))
    firsts, seen = [], set()
    for i in ranked:  # the same list with every repeat replaced by a filler
        firsts.append(i if i not in seen else -99)
        seen.add(i)
    for name, fn in [("hit", metrics.hit_at_k), ("precision", metrics.precision_at_k),
                     ("recall", metrics.recall_at_k), ("ndcg", metrics.ndcg_at_k)]:
        v = fn(ranked, relevant, k)
        assert 0.0 <= v <= 1.0 + 1e-12, (name, ranked, relevant, k, v)
        assert v == pytest.approx(fn(firsts, relevant, k)), name
    rr = metrics.reciprocal_rank(ranked, relevant)
    assert 0.0 <= rr <= 1.0 and rr == metrics.reciprocal_rank(firsts, relevant)
    ideal = sum(1 / math.log2(p + 2) for p in range(min(len(relevant), k)))
    assert metrics.dcg_at_k(ranked, relevant, k) <= ideal + 1e-12


def test_coverage_and_average_popularity():
    topk = np.array([[1, 2], [2, 3]])
    assert metrics.catalog_coverage(topk, 6) == pytest.approx(0.5)
    assert metrics.average_popularity(topk, np.array([0, 10, 20, 30, 0, 0, 0])) == pytest.approx(20.0)


def test_bad_model_output_is_reported():
    rng = np.random.default_rng(0)
    split, table = random_split(rng)
    with pytest.raises(ValueError, match="shape"):
        metrics.evaluate(FixedScores(table[:, :-1]), split)
    nan = table.copy()
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.evaluate(FixedScores(nan), split)


def test_per_user_frame_and_bootstrap():
    rng = np.random.default_rng(4)
    split, table = random_split(rng)
    res, frame = metrics.evaluate(FixedScores(table), split, ks=(5,), per_user=True)
    assert len(frame) == split.n_users and frame["NDCG@5"].mean() == pytest.approx(res["NDCG@5"])
    mean, lo, hi = metrics.bootstrap_ci(frame["NDCG@5"].to_numpy(), n_boot=200)
    assert lo <= mean <= hi


def test_large_catalog_is_batched():
    """6,000 users x 3,500 items: the evaluator stays vectorised (no timing asserted)."""
    rng = np.random.default_rng(0)
    n_users, n_items = 600, 3500
    users = np.repeat(np.arange(1, n_users + 1), 5)
    df = pd.DataFrame({"user": users, "item": rng.integers(1, n_items + 1, size=len(users)),
                       "timestamp": np.arange(len(users))})
    df = df.drop_duplicates(["user", "item"])
    split = prep.leave_one_out(df)

    class Rand(Recommender):
        n_items = split.n_items

        def score(self, u, h):
            return torch.rand(len(u), split.n_items + 1)

    res = metrics.evaluate(Rand(), split, ks=(10,), batch_size=256)
    assert 0 <= res["NDCG@10"] < 0.05


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "average"])
def test_rank_among_candidates_matches_brute_force(ties):
    import torch

    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.integers(0, 4, size=(30, 12)).astype(np.float32))  # many ties
    scores[rng.random((30, 12)) < 0.1] = -torch.inf
    cand = torch.from_numpy(rng.random((30, 12)) < 0.7)
    targets = scores[:, :3].clone()                                                   # three targets per row
    targets[0, 0] = -torch.inf
    got = metrics.rank_among_candidates(scores, targets, cand, ties)
    for b in range(30):
        c = scores[b][cand[b]]
        for j in range(3):
            higher, equal = int((c > targets[b, j]).sum()), int((c == targets[b, j]).sum())
            want = {"pessimistic": higher + equal, "optimistic": higher, "average": higher + equal / 2}[ties]
            assert got[b, j].item() == want, (b, j)
    with pytest.raises(ValueError, match="ties"):
        metrics.rank_among_candidates(scores, targets, cand, "random")


def test_paired_bootstrap_is_the_bootstrap_of_differences():
    a, b = np.random.default_rng(1).random(50), np.random.default_rng(2).random(50)
    assert metrics.paired_bootstrap(a, b, seed=3) == metrics.bootstrap_ci(a - b, seed=3)
    with pytest.raises(ValueError, match="same users"):
        metrics.paired_bootstrap(a, b[:10])
