"""recommend() against its contract for every model, and evaluate() against the lists recommend() serves.

* a list never holds padding (0) or, with ``exclude_seen``, a seen item, even when ``k``
  exceeds the items a user has not seen: those slots hold the fill ``NO_ITEM`` (-1), at the end;
* ``evaluate``'s Coverage@k and AvgPop@k ignore those fills;
* "seen" means the same in ``evaluate`` and ``recommend`` (repeat consumption included), so
  evaluate's per-user HR@k is the HR@k of the served lists, with either ``exclude_seen``.
"""
import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import metrics, prep
from course_lib.data import synthetic_sequences
from course_lib.models import (ALS, BERT4Rec, BERT4RecConfig, BPRMF, ExplicitMF, GRU4Rec, GRU4RecConfig, Item2Vec,
                               ItemKNN, MarkovChain, Popularity, SASRec, SASRecConfig, UserKNN)
from course_lib.models.base import NO_ITEM, recommend_topk

pytestmark = pytest.mark.unit


def random_interactions(rng, n_users=12, n_items=9, repeats=False):
    """Users who have seen most of a small catalog (so k exceeds what is left), times in order."""
    rows, t = [], 0
    for u in range(1, n_users + 1):
        n = int(rng.integers(3, n_items + 1))
        items = rng.choice(np.arange(1, n_items + 1), size=n, replace=repeats)
        for i in items:
            rows.append((u, int(i), float(rng.integers(1, 6)), t))
            t += 1
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


def small_models(split):
    n = split.n_items
    torch.manual_seed(0)
    return [
        Popularity().fit(split),
        ItemKNN().fit(split),
        UserKNN().fit(split),
        MarkovChain().fit(split),
        ExplicitMF(factors=2, epochs=2, device="cpu").fit(split),
        BPRMF(factors=2, epochs=2, device="cpu").fit(split),
        ALS(factors=2, iterations=2, device="cpu").fit(split),
        Item2Vec(dim=4, epochs=1, device="cpu").fit(split),
        GRU4Rec(n, GRU4RecConfig(max_len=8, emb_dim=4, hidden=8)).eval(),
        SASRec(n, SASRecConfig(max_len=8, hidden=8)).eval(),
        BERT4Rec(n, BERT4RecConfig(max_len=8, hidden=8)).eval(),
    ]


def check_lists(lists, histories, n_items, k, exclude_seen=True):
    assert lists.shape == (len(histories), min(k, n_items)) and lists.dtype == np.int64
    for row, h in zip(lists, histories):
        valid = row[row != NO_ITEM]
        assert (row[len(valid):] == NO_ITEM).all(), f"fills must come last: {row}"
        assert ((valid >= 1) & (valid <= n_items)).all(), f"padding or out-of-range item in {row}"
        assert len(set(valid.tolist())) == len(valid), f"an item twice in {row}"
        left = n_items - len(set(h)) if exclude_seen else n_items
        assert len(valid) == min(k, n_items, left), (row, h)
        if exclude_seen:
            assert not set(valid.tolist()) & set(np.asarray(h).tolist()), f"seen item recommended: {row}, seen {h}"


@pytest.mark.parametrize("seed", range(3))
def test_every_model_never_recommends_seen_items_or_padding(seed):
    rng = np.random.default_rng(seed)
    split = prep.leave_one_out(random_interactions(rng))
    hist = split.history("test")
    users = np.arange(1, split.n_users + 1)
    histories = [np.array(hist[u]) for u in users]
    for model in small_models(split):
        for k in (1, 4, split.n_items, split.n_items + 3):
            for exclude in (True, False):
                lists = model.recommend(users, histories, k=k, exclude_seen=exclude)
                check_lists(np.asarray(lists), histories, split.n_items, k, exclude)


def test_the_reported_case():
    """Popularity, 5 items, a user who saw 3 of them, k=4: the 2 unseen items, then fills."""
    df = pd.DataFrame({"user": [1] * 5 + [2] * 6, "item": [1, 2, 3, 1, 2, 1, 2, 3, 4, 5, 3],
                       "rating": 1.0, "timestamp": range(11)})
    split = prep.leave_one_out(df)
    got = Popularity().fit(split).recommend([1], [np.array([1, 2, 3])], k=4)
    assert got.tolist() == [[5, 4, NO_ITEM, NO_ITEM]] or got.tolist() == [[4, 5, NO_ITEM, NO_ITEM]]
    decoded = split.item_map.decode(got[0][got[0] > 0])  # the documented way to decode: drop the fills
    assert len(decoded) == 2


@pytest.mark.parametrize("seed", range(20))
def test_recommend_topk_on_random_scores(seed):
    """Random scores with ties, -inf and NaN; random histories, some covering the whole catalog."""
    rng = np.random.default_rng(seed)
    n_items, B = int(rng.integers(1, 12)), int(rng.integers(1, 8))
    scores = np.round(rng.normal(size=(B, n_items + 1)), 1).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    scores[rng.random(scores.shape) < 0.05] = np.nan
    histories = [rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(0, n_items + 1)), replace=True)
                 for _ in range(B)]
    k = int(rng.integers(1, n_items + 4))
    for exclude in (True, False):
        lists = recommend_topk(scores, histories, k, exclude_seen=exclude)
        check_lists(lists, histories, n_items, k, exclude)
        # the valid part is the best of the candidates, in order (ties: any order)
        for row, h, s in zip(lists, histories, scores):
            valid = row[row > 0]
            key = np.nan_to_num(s[valid], nan=np.inf, neginf=np.finfo(np.float32).min)
            assert (key[:-1] >= key[1:]).all()


def test_coverage_and_avgpop_ignore_fills():
    """Users who have seen all but two items, k=5: only real items count in Coverage@5 and AvgPop@5."""
    rng = np.random.default_rng(0)
    n_items, rows, t = 8, [], 0
    for u in range(1, 7):
        keep = rng.choice(np.arange(1, n_items + 1), size=n_items - 2, replace=False)
        for i in keep:
            rows.append((u, int(i), 1.0, t))
            t += 1
    split = prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]))
    model = Popularity().fit(split)
    res = metrics.evaluate(model, split, ks=(5,))
    hist = split.history("test")
    users = np.sort(split.test.user.unique())
    lists = model.recommend(users, [hist[u] for u in users], k=5)
    assert (lists == NO_ITEM).any()  # the case under test
    real = lists[lists > 0]
    pop = split.item_popularity()
    assert res["Coverage@5"] == pytest.approx(len(np.unique(real)) / split.n_items)
    assert res["AvgPop@5"] == pytest.approx(pop[real].mean())
    assert metrics.average_popularity(np.array([[NO_ITEM, 1], [2, NO_ITEM]]), pop) == pytest.approx((pop[1] + pop[2]) / 2)
    assert np.isnan(metrics.average_popularity(np.full((2, 3), NO_ITEM), pop))
    assert metrics.catalog_coverage(np.array([[NO_ITEM, 1, 0]]), split.n_items) == pytest.approx(1 / split.n_items)


def served_hr(model, split, k, exclude_seen):
    hist = split.history("test")
    t = split.targets("test").sort_values("user")
    lists = model.recommend(t.user.to_numpy(), [np.array(hist[u]) for u in t.user], k=k, exclude_seen=exclude_seen)
    return np.array([float(i in row) for i, row in zip(t.item, lists)])


def tied_targets(model, split, exclude_seen):
    """Users whose target shares its score with another candidate: there evaluate's ties-against rule
    and an arbitrary top-k order may differ (a separate, documented convention)."""
    hist = split.history("test")
    t = split.targets("test").sort_values("user")
    s = np.asarray(torch.as_tensor(model.score(t.user.to_numpy(), [np.array(hist[u]) for u in t.user])).float())
    out = []
    for r, (u, i) in enumerate(zip(t.user, t.item)):
        cand = np.ones(split.n_items + 1, bool)
        cand[0] = cand[i] = False
        if exclude_seen:
            cand[hist[u]] = False
        out.append(bool((s[r, cand] == s[r, i]).any()))
    return np.array(out)


def sequence_models(split):
    n = split.n_items
    torch.manual_seed(0)
    return [
        MarkovChain().fit(split),
        ALS(factors=8, iterations=3, device="cpu").fit(split),
        BPRMF(factors=8, epochs=3, device="cpu").fit(split),
        GRU4Rec(n, GRU4RecConfig(max_len=10, emb_dim=8, hidden=16)).eval(),
        SASRec(n, SASRecConfig(max_len=10, hidden=16)).eval(),
    ]


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_hr_equals_the_hr_of_the_served_lists_with_repeats(seed):
    """On the lab's toy data (held-out items that repeat an earlier one), per user, for both choices of "seen"."""
    df = synthetic_sequences(n_users=150, n_items=40, length=12, seed=seed)
    split = prep.leave_one_out(df)
    hist = split.history("test")
    t = split.targets("test").sort_values("user")
    repeat = np.array([i in set(hist[u].tolist()) for u, i in zip(t.user, t.item)])
    assert repeat.sum() >= 5, "the toy data must hold repeats for this test to mean anything"
    for model in sequence_models(split):
        for exclude in (True, False):
            tied = tied_targets(model, split, exclude)
            assert tied.mean() < 0.25, f"{model.name}: too many tied targets for a meaningful comparison"
            for k in (1, 10):
                res, per_user = metrics.evaluate(model, split, ks=(k,), per_user=True, exclude_seen=exclude)
                hits = served_hr(model, split, k, exclude)
                evaluated = per_user.set_index("user").loc[t.user]
                np.testing.assert_array_equal(evaluated[f"HR@{k}"].to_numpy()[~tied], hits[~tied],
                                              err_msg=f"{model.name}, exclude_seen={exclude}, k={k}")
                if not tied.any():
                    assert res[f"HR@{k}"] == pytest.approx(hits.mean())
                if exclude:
                    assert (hits[repeat] == 0).all()  # out of every list, so out of the metric too
                    assert (evaluated[f"HR@{k}"].to_numpy()[repeat] == 0).all()
                    assert (evaluated["AUC"].to_numpy()[repeat] == 0).all()


def test_exclude_seen_decides_whether_a_repeated_target_can_count():
    """An oracle that scores each user's held-out item highest: every target is a hit when repeats are
    allowed; with the history excluded exactly the repeated ones are misses, in evaluate and in recommend."""
    df = synthetic_sequences(n_users=80, n_items=30, length=10, seed=3)
    split = prep.leave_one_out(df)
    target = dict(zip(split.test.user, split.test.item))
    noise = np.random.default_rng(0).random((split.n_users + 1, split.n_items + 1)).astype(np.float32)

    class Oracle(Popularity):
        def score(self, users, histories):
            s = noise[np.asarray(users)].copy()
            s[np.arange(len(users)), [target[u] for u in users]] = 2.0
            return s

    model = Oracle().fit(split)
    hist, t = split.history("test"), split.targets("test")
    repeat_share = np.mean([i in set(hist[u].tolist()) for u, i in zip(t.user, t.item)])
    assert repeat_share > 0
    strict = metrics.evaluate(model, split, ks=(1,))
    allowed = metrics.evaluate(model, split, ks=(1,), exclude_seen=False)
    assert allowed["HR@1"] == 1.0
    assert strict["HR@1"] == pytest.approx(1 - repeat_share)
    for exclude, res in ((True, strict), (False, allowed)):
        assert res["HR@1"] == pytest.approx(served_hr(model, split, 1, exclude).mean())
    for sampler in ("uniform", "popularity"):  # sampled ranking: the same definition
        sampled = metrics.evaluate(model, split, ks=(1,), sampled=5, sampler=sampler)
        assert sampled["HR@1"] == pytest.approx(1 - repeat_share)
        assert metrics.evaluate(model, split, ks=(1,), sampled=5, sampler=sampler, exclude_seen=False)["HR@1"] == 1.0


def test_tied_scores_are_listed_by_item_id_for_every_k():
    from course_lib.models.base import recommend_topk

    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.integers(0, 3, size=(20, 300)).astype(np.float32))  # ties everywhere
    hist = [np.array([], dtype=np.int64)] * 20
    lists = {k: recommend_topk(scores, hist, k=k) for k in (5, 10, 11, 50)}
    for k in (5, 10, 11):
        assert (lists[k] == lists[50][:, :k]).all()   # a longer list starts with the shorter one
    for row, s in zip(lists[50], scores.numpy()):
        key = [(-s[i], i) for i in row]
        assert key == sorted(key)                     # by score, then by item ID
