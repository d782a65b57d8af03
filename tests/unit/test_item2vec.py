"""item2vec: skip-gram pairs, the SGNS loss, and embeddings that find co-occurring items."""
import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import metrics, prep
from course_lib.models.item2vec import Item2Vec, sgns_loss, skipgram_pairs
from course_lib.models.knn import most_similar
from course_lib.models.popularity import Popularity


def brute_pairs(histories, window):
    out = []
    for h in histories:
        for a in range(len(h)):
            for b in range(len(h)):
                if a != b and (window is None or abs(a - b) <= window):
                    out.append((h[a], h[b]))
    return sorted(out)


@pytest.mark.parametrize("window", [1, 2, None])
def test_skipgram_pairs_stay_within_a_history(window):
    hs = [np.array([1, 2, 3, 4]), np.array([], dtype=np.int64), np.array([5]), np.array([6, 7, 6])]
    got = sorted(map(tuple, skipgram_pairs(hs, window).tolist()))
    assert got == brute_pairs(hs, window)
    assert skipgram_pairs([np.array([3])], 2).shape == (0, 2)
    with pytest.raises(ValueError, match="window"):
        skipgram_pairs(hs, 0)


def test_sgns_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    v, u = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    negs = torch.randn(6, 3, 4, generator=g)
    by_hand = torch.stack([
        -torch.log(torch.sigmoid(v[b] @ u[b])) - sum(torch.log(torch.sigmoid(-v[b] @ negs[b, n])) for n in range(3))
        for b in range(6)]).mean()
    assert torch.allclose(sgns_loss(v, u, negs), by_hand, atol=1e-6)
    # a shared pool (M, d) with n_neg = M is the same loss as giving every pair that pool
    pool = torch.randn(3, 4, generator=g)
    assert torch.allclose(sgns_loss(v, u, pool, n_neg=3), sgns_loss(v, u, pool.expand(6, 3, 4)), atol=1e-6)
    with pytest.raises(ValueError, match="n_neg"):
        sgns_loss(v, u, pool)


def grouped_histories(n_users=200, n_groups=4, per_group=12, length=10, seed=0):
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for u in range(1, n_users + 1):
        g = u % n_groups
        for i in rng.choice(per_group, size=length, replace=False) + g * per_group + 1:
            rows.append((u, int(i), 1.0, t))
            t += 1
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


def test_item2vec_neighbours_share_a_group_and_it_beats_popularity():
    split = prep.leave_one_out(grouped_histories())
    m = Item2Vec(dim=16, window=3, epochs=8, lr=0.02, batch_size=512, sample=0, device="cpu").fit(split)
    assert m.history_["loss"][-1] < m.history_["loss"][0]
    V = m.item_vectors
    assert V.shape == (split.n_items + 1, 16)
    group = lambda enc: (split.item_map.decode([enc])[0] - 1) // 12  # noqa: E731
    for item in (1, 20, 40):
        ids, _ = most_similar(V, item, k=5)
        assert np.mean([group(i) == group(item) for i in ids]) >= 0.8
    hr = metrics.evaluate(m, split)["HR@10"]
    pop = metrics.evaluate(Popularity().fit(split), split)["HR@10"]
    assert hr > pop + 0.2, (hr, pop)


def test_item2vec_scores_new_users_from_history_and_is_deterministic():
    split = prep.leave_one_out(grouped_histories(n_users=60))
    kw = dict(dim=8, epochs=2, batch_size=256, device="cpu")
    a, b = Item2Vec(**kw).fit(split), Item2Vec(**kw).fit(split)
    assert torch.equal(a.V, b.V)
    h = split.history("test")[3]
    s = a.score(np.array([0, 3, 5]), [h, h, np.array([], dtype=np.int64)])
    assert s.shape == (3, split.n_items + 1)
    assert torch.equal(s[0], s[1])  # user IDs are not used, only histories
    assert float(s[2].abs().sum()) == 0  # empty history: no preference
    Vn = a.V / a.V.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(s[0].numpy(), (Vn @ Vn[torch.as_tensor(np.array(h[-5:]))].mean(0)).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="no field"):
        Item2Vec(windows=3)
    with pytest.raises(RuntimeError, match="fit"):
        Item2Vec().score(np.array([1]), [h])
