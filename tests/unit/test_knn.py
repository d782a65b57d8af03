"""ItemKNN and UserKNN against brute-force dense references on small random data."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from course_lib import metrics, prep
from course_lib.models.knn import ItemKNN, KNNConfig, UserKNN, cosine_similarity, history_matrix, topk_prune
from course_lib.models.popularity import Popularity


def random_split(seed=0, n_users=40, n_items=30):
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for u in range(1, n_users + 1):
        for i in rng.choice(np.arange(1, n_items + 1), size=rng.integers(4, 12), replace=False):
            rows.append((u, int(i), 4.0, t))
            t += 1
    return prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]))


def dense_train(split):
    X = np.zeros((split.n_users + 1, split.n_items + 1))
    X[split.train.user, split.train.item] = 1
    return X


def dense_cosine(A, shrink=0.0):
    n = np.linalg.norm(A, axis=1)
    return (A @ A.T) / (n[:, None] * n[None, :] + shrink + (n[:, None] * n[None, :] + shrink == 0))


def dense_topk(S, k):
    out = np.zeros_like(S)
    for r in range(S.shape[0]):
        order = sorted((c for c in range(S.shape[1]) if S[r, c] != 0), key=lambda c: (-S[r, c], c))[:k]
        out[r, order] = S[r, order]
    return out


@pytest.mark.parametrize("shrink", [0.0, 3.0])
def test_cosine_matches_dense(shrink):
    rng = np.random.default_rng(1)
    A = rng.random((12, 7)) * (rng.random((12, 7)) < 0.4)
    A[3] = 0  # an empty row: similarity 0, never NaN
    got = cosine_similarity(sp.csr_matrix(A), shrink=shrink).toarray()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, dense_cosine(A, shrink), rtol=1e-5, atol=1e-6)
    assert np.all(got[3] == 0)


def test_cosine_hand_case():
    A = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=float))
    S = cosine_similarity(A).toarray()
    np.testing.assert_allclose(S[0, 1], 1 / np.sqrt(2), rtol=1e-6)
    assert S[0, 2] == 0 and S[1, 2] == 0


def test_topk_prune_matches_dense():
    rng = np.random.default_rng(2)
    S = rng.random((9, 15)) * (rng.random((9, 15)) < 0.7)
    S[0, :] = 0.5  # ties: lower column wins
    for k in (1, 3, 20):
        np.testing.assert_allclose(topk_prune(sp.csr_matrix(S), k).toarray(), dense_topk(S, k), rtol=1e-6)


def test_history_matrix_weights():
    H = history_matrix([np.array([3, 1, 3]), np.array([], dtype=np.int64), np.array([0, 2])], n_items=4).toarray()
    np.testing.assert_array_equal(H, [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 1, 0, 0]])
    R = history_matrix([np.array([1, 2, 3])], n_items=3, recency=1.0).toarray()
    np.testing.assert_allclose(R[0], [0, 0.25, 0.5, 1.0])
    with pytest.raises(ValueError, match="outside"):
        history_matrix([np.array([9])], n_items=3)


@pytest.mark.parametrize("k,shrink", [(3, 0.0), (10, 2.0)])
def test_itemknn_matches_bruteforce(k, shrink):
    split = random_split()
    X = dense_train(split)
    S = dense_cosine(X.T, shrink)
    np.fill_diagonal(S, 0)
    S[0, :] = S[:, 0] = 0
    W = dense_topk(S, k)
    model = ItemKNN(k=k, shrink=shrink).fit(split)
    hist = split.history("test")
    users = np.arange(1, split.n_users + 1)
    got = model.score(users, [hist[u] for u in users])
    assert got.shape == (len(users), split.n_items + 1)
    assert np.all(np.isneginf(got[:, 0]))
    H = np.zeros((len(users), split.n_items + 1))
    for r, u in enumerate(users):
        H[r, hist[u]] = 1
    np.testing.assert_allclose(got[:, 1:], (H @ W)[:, 1:], rtol=1e-5, atol=1e-6)
    ids, sims = model.similar_items(1, k=2)
    assert len(ids) <= 2 and np.all(np.diff(sims) <= 0) and 1 not in ids


def test_itemknn_new_user_needs_only_a_history():
    split = random_split()
    model = ItemKNN(k=5).fit(split)
    known = model.score(np.array([1]), [split.history("test")[1]])
    as_new = model.score(np.array([0]), [split.history("test")[1]])
    np.testing.assert_array_equal(known, as_new)
    empty = model.score(np.array([0]), [np.zeros(0, dtype=np.int64)])
    assert np.all(empty[0, 1:] == 0)


def test_userknn_matches_bruteforce():
    split = random_split(seed=3)
    k, shrink = 4, 1.0
    X = dense_train(split)
    hist = split.history("test")
    users = np.arange(1, split.n_users + 1)
    model = UserKNN(k=k, shrink=shrink).fit(split)
    got = model.score(users, [hist[u] for u in users])
    for r, u in enumerate(users):
        q = X[u].copy()
        q[hist[u]] = 1
        sims = (X @ q) / (np.linalg.norm(X, axis=1) * np.linalg.norm(q) + shrink + 1e-12)
        sims[u] = sims[0] = 0
        w = dense_topk(sims[None, :], k)[0]
        np.testing.assert_allclose(got[r, 1:], (w @ X)[1:], rtol=1e-5, atol=1e-6)


def test_userknn_new_user_from_history():
    split = random_split(seed=4)
    model = UserKNN(k=5, shrink=0.0).fit(split)
    h = split.training_histories()[2]  # = user 2's training row
    new = model.score(np.array([0]), [h])
    assert np.isfinite(new[0, 1:]).all() and new[0, 1:].max() > 0
    # the known user excludes themselves from their neighbours; the "new" copy finds user 2 first
    assert model.neighbours(np.array([0]), [h]).toarray()[0, 2] > 0.99
    assert model.neighbours(np.array([2]), [h]).toarray()[0, 2] == 0
    unknown = model.score(np.array([split.n_users + 7]), [h])
    np.testing.assert_allclose(unknown, new)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="k"):
        ItemKNN(k=0)
    with pytest.raises(TypeError, match="has no field 'neighbours'"):
        UserKNN(neighbours=5)
    with pytest.raises(RuntimeError, match="fit"):
        ItemKNN().score(np.array([1]), [np.array([1])])
    split = random_split()
    with pytest.raises(ValueError, match="histories"):
        UserKNN().fit(split).score(np.array([1, 2]), [np.array([1])])
    assert ItemKNN(KNNConfig(k=7)).config.k == 7
    assert UserKNN().config.k == 30 and ItemKNN().config.k == 50
    given = KNNConfig(k=7)
    assert UserKNN(given, shrink=2.0).config == KNNConfig(k=7, shrink=2.0) and given.shrink == 10.0  # a copy


def test_knn_beats_popularity_on_clustered_data():
    # two taste groups: people like the items of their own group
    rng = np.random.default_rng(5)
    rows, t = [], 0
    for u in range(1, 81):
        group = np.arange(1, 21) if u % 2 else np.arange(21, 41)
        for i in rng.choice(group, size=8, replace=False):
            rows.append((u, int(i), 5.0, t))
            t += 1
    split = prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]))
    pop = metrics.evaluate(Popularity().fit(split), split)["NDCG@10"]
    for model in (ItemKNN(k=10), UserKNN(k=10)):
        assert metrics.evaluate(model.fit(split), split)["NDCG@10"] > pop + 0.1, model
