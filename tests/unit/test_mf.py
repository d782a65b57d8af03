"""Matrix factorization: explicit biased MF, BPR-MF, ALS, fold-in (one signature for the three),
the random rating split, nearest items in a factor space."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import metrics, prep
from course_lib.models.als import ALS, als_fold_in, als_half_step
from course_lib.models.bpr import BPRMF, bpr_loss
from course_lib.models.explicit_mf import ExplicitMF
from course_lib.models.factors import UserFactors
from course_lib.models.knn import most_similar, nearest_items
from course_lib.models.popularity import Popularity
from course_lib.prep import random_split


def low_rank_ratings(n_users=120, n_items=80, k=3, density=0.3, noise=0.1, seed=0):
    """Ratings from a known biased low-rank model, raw IDs (offset so encoding is exercised)."""
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(size=(n_users, k)) * 0.6, rng.normal(size=(n_items, k)) * 0.6
    bu, bi = rng.normal(size=n_users) * 0.3, rng.normal(size=n_items) * 0.5
    mask = rng.random((n_users, n_items)) < density
    u, i = np.nonzero(mask)
    r = 3.5 + bu[u] + bi[i] + (P[u] * Q[i]).sum(1) + rng.normal(size=len(u)) * noise
    return pd.DataFrame({"user": u + 100, "item": i + 1000, "rating": r.astype(np.float32),
                         "timestamp": rng.integers(0, 10**6, len(u))})


def clustered_interactions(n_users=150, n_groups=4, items_per_group=15, per_user=12, seed=0):
    """Each user clicks items of one group only: a structure any CF model should find."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for u in range(1, n_users + 1):
        g = u % n_groups
        items = rng.choice(np.arange(items_per_group), size=per_user, replace=False) + g * items_per_group + 1
        for i in items:
            rows.append((u, int(i), 1.0, t))
            t += 1
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


# ----------------------------------------------------------------------------- split


def test_random_split_partitions_rows_deterministically():
    df = low_rank_ratings()
    s = random_split(df, test_frac=0.2, valid_frac=0.1, seed=3)
    assert s.kind == "random"
    assert len(s.train) + len(s.valid) + len(s.test) == len(df)
    assert len(s.test) == round(0.2 * len(df))
    keys = lambda f: set(zip(f.user, f.item))  # noqa: E731
    assert not (keys(s.train) & keys(s.test)) and not (keys(s.train) & keys(s.valid))
    assert s.train.user.min() >= 1 and s.train.user.max() <= s.n_users
    again = random_split(df, test_frac=0.2, valid_frac=0.1, seed=3)
    pd.testing.assert_frame_equal(s.test, again.test)
    with pytest.raises(ValueError, match="rating"):
        random_split(df.drop(columns="rating"))


# ----------------------------------------------------------------------------- explicit MF


def test_explicit_mf_recovers_a_low_rank_model():
    s = random_split(low_rank_ratings(), test_frac=0.2, valid_frac=0.1, seed=0)
    m = ExplicitMF(factors=8, reg=0.01, bias_reg=0.001, lr=0.03, epochs=40, batch_size=512, device="cpu").fit(s)
    baseline = float(np.sqrt(((s.test.rating - s.train.rating.mean()) ** 2).mean()))
    rmse = m.rmse(s.test)
    assert rmse < 0.6 * baseline, (rmse, baseline)
    assert len(m.history_["train_rmse"]) == 40 and np.isfinite(m.history_["valid_rmse"]).all()
    assert m.history_["train_rmse"][-1] < m.history_["train_rmse"][0]
    # the formula: mu + b_u + b_i + p_u . q_i (before clipping)
    u, i = np.array(s.test.user[:5]), np.array(s.test.item[:5])
    by_hand = m.mu_ + m.bu[u] + m.bi[i] + (m.P[u] * m.Q[i]).sum(1)
    np.testing.assert_allclose(m.predict(u, i, clip=False), by_hand.numpy(), rtol=1e-5, atol=1e-5)
    pred = m.predict(s.test.user, s.test.item)
    assert pred.min() >= s.train.rating.min() - 1e-6 and pred.max() <= s.train.rating.max() + 1e-6


def test_explicit_mf_score_and_fold_in():
    s = random_split(low_rank_ratings(seed=1), test_frac=0.2, seed=1)
    m = ExplicitMF(factors=4, reg=0.02, epochs=15, batch_size=512, device="cpu").fit(s)
    scores = m.score(np.array([1, 2]), [np.array([]), np.array([])])
    assert scores.shape == (2, s.n_items + 1)
    np.testing.assert_allclose(scores[0, 1:4].numpy(), m.predict([1, 1, 1], [1, 2, 3], clip=False), rtol=1e-5)
    # a new user given user 1's training ratings folds in to similar predictions
    tr = s.train[s.train.user == 1]
    b, p = m.fold_in(tr.item.to_numpy(), tr.rating.to_numpy())
    new = m.mu_ + b + m.bi + m.Q @ p
    known = scores[0]
    assert np.corrcoef(new[1:].numpy(), known[1:].numpy())[0, 1] > 0.8
    # score() folds in rows whose user is 0, with clicked items taken as assumed_rating
    row = m.score(np.array([0]), [tr.item.to_numpy()])
    assert row.shape == (1, s.n_items + 1) and torch.isfinite(row).all()
    b0, p0 = m.fold_in([])
    assert b0 == 0.0 and float(p0.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="ratings"):
        m.fold_in([1, 2], [5.0])


def test_explicit_mf_errors_are_clear():
    with pytest.raises(RuntimeError, match="fit"):
        ExplicitMF().predict([1], [1])
    with pytest.raises(TypeError, match="no field"):
        ExplicitMF(factor=3)
    with pytest.raises(ValueError, match="rating"):
        ExplicitMF().fit_ratings(pd.DataFrame({"user": [1], "item": [1]}), 1, 1)


# ----------------------------------------------------------------------------- BPR


def test_bpr_loss_matches_the_formula_and_is_stable():
    rng = np.random.default_rng(0)
    x_ui, x_uj = torch.tensor(rng.normal(size=50)), torch.tensor(rng.normal(size=50))
    by_hand = -torch.log(torch.sigmoid(x_ui - x_uj)).mean()
    assert torch.allclose(bpr_loss(x_ui, x_uj), by_hand)
    big = bpr_loss(torch.tensor([0.0]), torch.tensor([200.0]))
    assert torch.isfinite(big) and abs(float(big) - 200.0) < 1e-4


def test_bpr_negatives_are_never_seen():
    users = torch.tensor([1, 1, 2, 2, 2] * 200)
    n1 = 6
    seen = torch.sort(torch.tensor([1 * n1 + 1, 1 * n1 + 2, 1 * n1 + 3, 2 * n1 + 5])).values
    neg = BPRMF._sample_negatives(users, seen, n1, torch.Generator().manual_seed(0))
    keys = users * n1 + neg
    assert not torch.isin(keys, seen).any() and neg.min() >= 1 and neg.max() <= 5


def test_bpr_learns_clusters_and_beats_popularity():
    split = prep.leave_one_out(clustered_interactions())
    m = BPRMF(factors=8, lr=0.05, epochs=30, batch_size=256, device="cpu").fit(split)
    assert m.history_["loss"][-1] < m.history_["loss"][0]
    hr = metrics.evaluate(m, split)["HR@10"]
    pop = metrics.evaluate(Popularity().fit(split), split)["HR@10"]
    assert hr > pop + 0.2, (hr, pop)
    # a new user (ID 0) with user 1's history is folded in and gets items of the same group
    h = split.history("test")[1]
    top = m.recommend([0], [h], k=5)[0]
    group = lambda i: (i - 1) // 15  # noqa: E731 (encoded IDs keep the raw order here)
    raw = split.item_map.decode(top)
    assert np.mean([group(i) == group(split.item_map.decode(h)[0]) for i in raw]) >= 0.8


# ----------------------------------------------------------------------------- ALS


def brute_half_step(R, Y, alpha, reg):
    n, k = R.shape[0], Y.shape[1]
    X = np.zeros((n, k))
    for u in range(n):
        c = 1 + alpha * R[u]
        p = (R[u] > 0).astype(float)
        A = Y.T @ (c[:, None] * Y) + reg * np.eye(k)
        X[u] = np.linalg.solve(A, Y.T @ (c * p))
    return X


def test_als_half_step_matches_the_per_user_solve():
    rng = np.random.default_rng(0)
    R = (rng.random((12, 9)) < 0.3).astype(float)
    R[3] = 0  # a user without interactions gets the zero vector
    Y = rng.normal(size=(9, 4))
    X = als_half_step(R, Y, alpha=2.0, reg=0.5)
    assert isinstance(X, np.ndarray) and X.shape == (12, 4)
    np.testing.assert_allclose(X, brute_half_step(R, Y, 2.0, 0.5), rtol=1e-8, atol=1e-8)
    assert np.abs(X[3]).max() == 0
    # torch input, sparse R, weighted confidences
    import scipy.sparse as sp
    Rw = R * rng.integers(1, 4, size=R.shape)
    Xt = als_half_step(sp.csr_matrix(Rw), torch.tensor(Y, dtype=torch.float64), alpha=1.5, reg=0.1)
    assert isinstance(Xt, torch.Tensor)
    np.testing.assert_allclose(Xt.numpy(), brute_half_step(Rw, Y, 1.5, 0.1), rtol=1e-7, atol=1e-8)
    with pytest.raises(ValueError, match="columns"):
        als_half_step(R, Y[:5], 1.0, 1.0)
    with pytest.raises(ValueError, match="reg"):
        als_half_step(R, Y, 1.0, 0.0)


@pytest.mark.parametrize("seed", range(8))
def test_als_half_step_rejects_negative_or_non_finite_weights(seed):
    """Any negative (or NaN / inf) confidence weight, dense or sparse: a ValueError that says what was
    given and what is expected, instead of a silently raised score or an opaque Cholesky failure."""
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    n, m, k = int(rng.integers(2, 15)), int(rng.integers(2, 12)), int(rng.integers(1, 5))
    R = (rng.random((n, m)) < 0.4) * rng.integers(1, 5, size=(n, m)).astype(float)
    Y = rng.normal(size=(m, k))
    als_half_step(R, Y, 1.0, 0.5)  # non-negative weights, zeros included: fine
    bad = rng.choice([-1.0, -0.001, -50.0, np.nan, np.inf])
    R[int(rng.integers(n)), int(rng.integers(m))] = bad
    for matrix in (R, sp.csr_matrix(R), sp.coo_matrix(R)):
        for factors in (Y, torch.tensor(Y)):
            with pytest.raises(ValueError, match=r"expects interaction weights r >= 0") as err:
                als_half_step(matrix, factors, alpha=float(rng.uniform(0, 3)), reg=0.5)
            assert f"{bad:g}" in str(err.value)  # what was given


def test_als_fit_input_is_validated():
    """ALS.fit builds 0/1 interactions from split.train (ratings are not confidences), and its
    confidence scale alpha must be >= 0."""
    split = prep.leave_one_out(clustered_interactions(n_users=30))
    neg = dataclasses.replace(split, train=split.train.assign(rating=-3.0))  # negative ratings: ignored
    a = ALS(factors=2, iterations=2, device="cpu").fit(neg)
    b = ALS(factors=2, iterations=2, device="cpu").fit(split)
    assert torch.equal(a.Y, b.Y)
    with pytest.raises(ValueError, match=r"alpha >= 0, got reg=1.0, alpha=-0.5"):
        ALS(alpha=-0.5, iterations=1, device="cpu").fit(split)


def test_als_fold_in_is_the_user_half_step():
    rng = np.random.default_rng(1)
    Y = torch.tensor(rng.normal(size=(10, 3)))
    Y[0] = 0  # padding row
    items = np.array([2, 5, 7])
    R = np.zeros((1, 10))
    R[0, items] = 1
    x = als_fold_in(Y, items, alpha=3.0, reg=0.7)
    np.testing.assert_allclose(x.numpy(), brute_half_step(R, Y.numpy(), 3.0, 0.7)[0], rtol=1e-8)
    assert float(als_fold_in(Y, [], 3.0, 0.7).abs().sum()) == 0
    with pytest.raises(ValueError, match="item IDs"):
        als_fold_in(Y, [10], 1.0, 1.0)


def test_als_loss_decreases_and_matches_brute_force():
    split = prep.leave_one_out(clustered_interactions(n_users=60))
    m = ALS(factors=4, alpha=2.0, reg=0.5, iterations=6, device="cpu").fit(split, track_loss=True)
    loss = np.array(m.history_["loss"])
    assert (np.diff(loss) <= 1e-6 * loss[0]).all(), loss
    R = prep.interaction_matrix(split.train, split.n_users, split.n_items, implicit=True).toarray()[1:, 1:]
    S = (m.X[1:] @ m.Y[1:].T).double().numpy()
    c = 1 + 2.0 * R
    by_hand = (c * (R - S) ** 2).sum() + 0.5 * ((m.X[1:].double() ** 2).sum() + (m.Y[1:].double() ** 2).sum()).item()
    assert abs(loss[-1] - by_hand) < 1e-3 * by_hand
    assert float(m.X[0].abs().sum()) == 0 and float(m.Y[0].abs().sum()) == 0  # padding stays zero


def test_als_ranks_well_is_deterministic_and_folds_in():
    split = prep.leave_one_out(clustered_interactions())
    m = ALS(factors=8, alpha=2.0, reg=0.5, iterations=8, device="cpu").fit(split)
    again = ALS(factors=8, alpha=2.0, reg=0.5, iterations=8, device="cpu").fit(split)
    assert torch.equal(m.X, again.X)
    hr = metrics.evaluate(m, split)["HR@10"]
    pop = metrics.evaluate(Popularity().fit(split), split)["HR@10"]
    assert hr > pop + 0.2, (hr, pop)
    h = split.history("test")[4]
    s0 = m.score(np.array([0, 4]), [h, h])
    assert s0.shape == (2, split.n_items + 1)
    np.testing.assert_allclose(s0[0].numpy(), (m.Y @ als_fold_in(m.Y, h, 2.0, 0.5)).numpy(), rtol=1e-5)
    assert torch.equal(m.fold_in(h).vector, als_fold_in(m.Y, h, 2.0, 0.5))
    with pytest.raises(ValueError, match="histories"):
        m.score(np.array([1, 2]), [h])
    with pytest.raises(RuntimeError, match="fit"):
        ALS().score(np.array([1]), [h])


def test_most_similar_is_cosine_and_skips_the_item():
    rng = np.random.default_rng(0)
    V = rng.normal(size=(8, 3))
    ids, sims = most_similar(V, 2, k=3)
    Vn = V / np.linalg.norm(V, axis=1, keepdims=True)
    ref = Vn[1:] @ Vn[2]
    order = np.argsort(-ref) + 1
    order = order[order != 2][:3]
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_allclose(sims, (Vn[order] @ Vn[2]), rtol=1e-5)
    assert 2 not in ids and 0 not in ids
    with pytest.raises(ValueError, match="item"):
        most_similar(V, 0)


def test_nearest_items_batches_most_similar():
    rng = np.random.default_rng(1)
    V = rng.normal(size=(20, 4))
    ids, sims = nearest_items(V, [3, 7, 19], k=5)
    assert ids.shape == sims.shape == (3, 5)
    for row, item in enumerate([3, 7, 19]):
        one_ids, one_sims = most_similar(V, item, k=5)
        np.testing.assert_array_equal(ids[row], one_ids)
        assert item not in ids[row] and 0 not in ids[row]
        assert (np.diff(sims[row]) <= 1e-7).all()
    dot_ids, _ = nearest_items(V, [3], k=2, metric="dot")
    ref = V[1:] @ V[3]
    ref[3 - 1] = -np.inf
    np.testing.assert_array_equal(dot_ids[0], np.argsort(-ref)[:2] + 1)
    with pytest.raises(ValueError, match="k must"):
        nearest_items(V, [1], k=50)


def test_bpr_fold_in_lowers_the_bpr_loss_of_the_new_user():
    split = prep.leave_one_out(clustered_interactions(n_users=80))
    m = BPRMF(factors=6, lr=0.05, epochs=10, batch_size=256, device="cpu").fit(split)
    h = split.history("test")[2]
    b, p = m.fold_in(h)
    assert b == 0.0 and torch.equal(p, m.fold_in(h).vector) and p.shape == (6,)
    assert float(m.fold_in(np.array([], dtype=np.int64)).vector.abs().sum()) == 0

    def loss(vec):
        x = m.Q @ vec + m.b
        neg = np.setdiff1d(np.arange(1, split.n_items + 1), h)
        return float(torch.nn.functional.softplus(x[neg][None, :] - x[np.unique(h)][:, None]).mean())

    assert loss(p) < loss(torch.zeros(6)) - 0.1


def test_bpr_on_epoch_is_called_after_every_epoch():
    split = prep.leave_one_out(clustered_interactions(n_users=40))
    calls = []
    m = BPRMF(factors=4, epochs=3, batch_size=256, device="cpu").fit(
        split, on_epoch=lambda model, epoch, loss: calls.append((model, epoch, loss)))
    assert [c[1] for c in calls] == [1, 2, 3] and all(c[0] is m for c in calls)
    assert [c[2] for c in calls] == m.history_["loss"]
    plain = BPRMF(factors=4, epochs=3, batch_size=256, device="cpu").fit(split)
    assert torch.equal(plain.Q, m.Q)  # a callback that only reads changes nothing


def test_fold_in_has_one_signature_for_the_three_models():
    """fold_in(items, ratings=None) -> UserFactors(bias, vector) everywhere; the implicit models
    ignore the ratings (they train on 0/1 interactions), ExplicitMF regresses on them."""
    ratings = random_split(low_rank_ratings(seed=2), test_frac=0.2, seed=2)
    loo = prep.leave_one_out(clustered_interactions(n_users=40))
    models = [ExplicitMF(factors=3, epochs=2, device="cpu").fit(ratings),
              BPRMF(factors=3, epochs=2, batch_size=256, device="cpu").fit(loo),
              ALS(factors=3, iterations=2, device="cpu").fit(loo)]
    items = np.array([1, 3, 0, 4])  # 0: padding, dropped
    for m in models:
        out = m.fold_in(items)
        assert isinstance(out, UserFactors) and isinstance(out.bias, float) and out.vector.shape == (3,)
        with_ratings = m.fold_in(items, [5.0, 1.0, 3.0, 2.0])
        if isinstance(m, ExplicitMF):
            assert not torch.equal(with_ratings.vector, out.vector)
        else:
            assert with_ratings.bias == 0.0 and torch.equal(with_ratings.vector, out.vector)
        with pytest.raises(ValueError, match="one rating per item"):
            m.fold_in(items, [5.0])
        with pytest.raises(ValueError, match="item IDs"):
            m.fold_in([m.n_items + 1])
        empty = m.fold_in([])
        assert empty.bias == 0.0 and float(empty.vector.abs().sum()) == 0
