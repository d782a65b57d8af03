"""Notebooks 08 and 09: tie handling, sampled-metric theory and the paired bootstrap (course_lib.metrics), the toy
task (course_lib.data), the BERT4Rec lab pieces (course_lib.exercises.lab09)."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.exercises import lab09
from course_lib import data, metrics, prep

pytestmark = pytest.mark.unit


# ----------------------------------------------------------------------------- notebook 08

def test_tie_rank_hand_case_and_constant_scores():
    s = np.array([[0.5, 0.9, 0.5, 0.1, 0.5]])
    assert metrics.tie_rank(s, [0], ties="pessimistic").tolist() == [3.0]  # 0.9 and two ties
    assert metrics.tie_rank(s, [0], ties="optimistic").tolist() == [1.0]
    assert metrics.tie_rank(s, [0], ties="average").tolist() == [2.0]
    const = np.zeros((3, 10))
    assert metrics.tie_rank(const, [0, 4, 9]).tolist() == [9.0, 9.0, 9.0]      # last: a constant model learns nothing
    assert metrics.tie_rank(const, [0, 4, 9], ties="optimistic").tolist() == [0.0, 0.0, 0.0]  # the trap: first
    cand = np.zeros((1, 5), dtype=bool)
    cand[0, [1, 3]] = True
    assert metrics.tie_rank(s, [0], candidates=cand).tolist() == [1.0]


def test_tie_rank_matches_the_evaluator():
    """Pessimistic rank < 10 reproduces evaluate()'s full-ranking HR@10 on a split with many ties."""
    rng = np.random.default_rng(0)
    df = data.synthetic_sequences(n_users=60, n_items=40, length=8, seed=1)
    split = prep.leave_one_out(df)

    class Coarse:
        n_items = split.n_items

        def score(self, users, histories):
            return np.floor(np.random.default_rng(5).random((len(users), self.n_items + 1)) * 4)

    res = metrics.evaluate(Coarse(), split, ks=(10,))
    t = split.targets("test").sort_values("user")
    scores = Coarse().score(t.user.to_numpy(), None)
    seen = split.seen_matrix("test")[t.user.to_numpy()].toarray() > 0
    cand = ~seen
    cand[:, 0] = False
    rank = metrics.tie_rank(scores, t.item.to_numpy(), candidates=cand)
    repeat = seen[np.arange(len(t)), t.item.to_numpy()]  # a held-out item seen before is in no list: a miss
    assert repeat.any()  # the toy data has repeats: the definition matters here
    assert math.isclose(float(((rank < 10) & ~repeat).mean()), res["HR@10"], rel_tol=1e-9)
    assert rng is not None


def test_sampled_hit_probability_against_simulation():
    rng = np.random.default_rng(0)
    n, m, k = 300, 100, 10
    for r in (0, 5, 30, 120):
        sims = np.array([(rng.choice(n, m, replace=False) < r).sum() < k for _ in range(4000)])
        p = float(metrics.sampled_hit_probability(r, n, m, k))
        assert abs(p - sims.mean()) < 0.03, (r, p, sims.mean())
    assert float(metrics.sampled_hit_probability(0, n, m, k)) == pytest.approx(1.0)
    # sampling everything is full ranking: a hit iff rank < k
    assert metrics.sampled_hit_probability([3, 9, 10, 50], 60, 60, 10).tolist() == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        metrics.sampled_hit_probability(5, 4)


def test_expected_sampled_metrics_consistent_and_simulated():
    ranks = np.array([0, 2, 40, 500])
    e = metrics.expected_sampled_metrics(ranks, 1600, 100, 10)
    assert np.allclose(e["HR@10"], metrics.sampled_hit_probability(ranks, 1600, 100, 10))
    assert e["NDCG@10"][0] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    sim = []
    for _ in range(3000):
        x = (rng.choice(1600, 100, replace=False) < 40).sum()
        sim.append(1 / math.log2(x + 2) if x < 10 else 0.0)
    assert abs(e["NDCG@10"][2] - np.mean(sim)) < 0.02
    assert np.all(np.diff(e["NDCG@10"]) <= 0)  # worse full rank, lower expected sampled NDCG


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.random(200)
    assert metrics.paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    mean, lo, hi = metrics.paired_bootstrap(a + 0.1, a)
    assert mean == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    b = rng.random(200)
    mean, lo, hi = metrics.paired_bootstrap(a, b, n_boot=500)
    assert lo < mean < hi and mean == pytest.approx(float((a - b).mean()))
    with pytest.raises(ValueError):
        metrics.paired_bootstrap(a, b[:10])


# ----------------------------------------------------------------------------- notebook 09

def test_synthetic_sequences_shape_and_signal():
    df = data.synthetic_sequences(n_users=50, n_items=30, length=12, n_steps=2, p_follow=1.0, seed=3)
    assert len(df) == 600 and set(df.columns) >= {"user", "item", "timestamp"}
    assert df.item.min() >= 1 and df.item.max() <= 30 and df.user.nunique() == 50
    for _, g in df.groupby("user"):
        step = np.diff(g.sort_values("timestamp").item.to_numpy() - 1) % 30
        assert len(set(step.tolist())) == 1 and step[0] in (1, 2)
    assert data.synthetic_sequences(seed=1).equals(data.synthetic_sequences(seed=1))


def test_synthetic_sequences_follow_the_documented_ring_on_ids():
    """Notebook 09 states the walk on the IDs 1..n: next = ((i + s - 1) mod n) + 1, so n is followed by s."""
    n = 10
    df = data.synthetic_sequences(n_users=40, n_items=n, length=15, n_steps=3, p_follow=1.0, seed=4)
    wrapped = 0
    for _, g in df.groupby("user"):
        items = g.sort_values("timestamp").item.to_numpy()
        s = int((items[1] - items[0]) % n)
        assert 1 <= s <= 3
        assert all(items[t + 1] == (items[t] + s - 1) % n + 1 for t in range(len(items) - 1))
        wrapped += int(any(items[t] > items[t + 1] for t in range(len(items) - 1)))
    assert wrapped > 0, "some walks go past item n and start again at the low IDs"


def test_embed_sequence_positions_from_the_right_and_padding():
    torch.manual_seed(0)
    item, pos = nn.Embedding(11, 8, padding_idx=0), nn.Embedding(6, 8)
    a = torch.tensor([[0, 0, 3, 4, 5]])
    b = torch.tensor([[3, 4, 5]])
    xa, xb = lab09.embed_sequence(a, item, pos), lab09.embed_sequence(b, item, pos)
    assert xa.shape == (1, 5, 8)
    assert torch.allclose(xa[0, 2:], xb[0])                 # same items, same positions, whatever the padding
    assert torch.all(xa[0, :2] == 0)
    assert torch.allclose(xb[0, -1], item.weight[5] + pos.weight[5])
    with pytest.raises(ValueError):
        lab09.embed_sequence(torch.ones(1, 7, dtype=torch.long), item, pos)


def test_cloze_mask_properties():
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(1, 50, (400, 20))
    batch[:, :5] = 0
    batch[0] = 0  # an all-padding row stays untouched
    inputs, labels = lab09.cloze_mask(batch, 0.2, 99, g)
    masked = inputs == 99
    assert torch.equal(masked, labels != 0)
    assert torch.equal(labels[masked], batch[masked])
    assert torch.equal(inputs[~masked], batch[~masked])
    assert not masked[:, :5].any() and not masked[0].any()
    assert masked[1:].any(1).all()                          # every row with items has a mask
    assert abs(masked[1:].float().sum() / (batch[1:] != 0).sum() - 0.2) < 0.03
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(lab09.cloze_mask(batch, 0.2, 99, g1)[0], lab09.cloze_mask(batch, 0.2, 99, g2)[0])
    # with a tiny probability the last item is the one masked
    one = torch.tensor([[0, 0, 7, 8, 9]])
    i, lbl = lab09.cloze_mask(one, 1e-9, 99)
    assert i.tolist() == [[0, 0, 7, 8, 99]] and lbl.tolist() == [[0, 0, 0, 0, 9]]


def test_masked_cross_entropy_ignores_unmasked_positions():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 10)
    labels = torch.tensor([[0, 2, 0, 0], [0, 0, 0, 9], [1, 0, 0, 0]])
    want = F.cross_entropy(torch.stack([logits[0, 1], logits[1, 3], logits[2, 0]]), torch.tensor([2, 9, 1]))
    assert torch.allclose(lab09.masked_cross_entropy(logits, labels), want)
    with pytest.raises(ValueError):
        lab09.masked_cross_entropy(logits, torch.zeros(3, 4, dtype=torch.long))


class _Tiny(nn.Module):
    def __init__(self, n_items, max_len):
        super().__init__()
        self.n_items, self.mask_token = n_items, n_items + 1
        self.item, self.pos = nn.Embedding(n_items + 2, 16, padding_idx=0), nn.Embedding(max_len, 16)
        self.mix = nn.Linear(16 * max_len, 16 * max_len)

    def forward(self, seq):
        x = lab09.embed_sequence(seq, self.item, self.pos)
        B, L, H = x.shape
        x = x + self.mix(x.reshape(B, -1)).reshape(B, L, H)
        return x @ self.item.weight[: self.n_items + 1].T


def test_train_masked_epoch_learns_and_ndcg_matches_evaluator():
    torch.manual_seed(0)
    df = data.synthetic_sequences(n_users=120, n_items=20, length=10, n_steps=1, p_follow=1.0, seed=0)
    split = prep.leave_one_out(df)
    model = _Tiny(split.n_items, 10)
    seqs = torch.from_numpy(prep.pad_sequences(split.training_histories()[1:], 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = [lab09.train_masked_epoch(model, seqs, opt, batch_size=32, mask_prob=0.3, generator=g) for _ in range(15)]
    assert losses[-1] < losses[0] - 0.5

    class Wrapped:
        n_items = split.n_items

        def score(self, users, histories):
            with torch.no_grad():
                return model(lab09.mask_appended_inputs(histories, 10, model.mask_token))[:, -1]

    res = metrics.evaluate(Wrapped(), split)
    t = split.targets("test").sort_values("user")
    hist = split.history("test")
    scores = Wrapped().score(None, [hist[u] for u in t.user])
    seen = split.seen_matrix("test")[t.user.to_numpy()].toarray() > 0
    ndcg = lab09.ndcg_from_scores(scores, t.item.to_numpy(), seen)
    assert ndcg.shape == (len(t),)
    assert float(ndcg.mean()) == pytest.approx(res["NDCG@10"], rel=1e-6)


def test_ndcg_from_scores_ties_count_against():
    s = torch.zeros(2, 6)
    assert lab09.ndcg_from_scores(s, [1, 2], k=3).tolist() == [0.0, 0.0]  # constant scores: rank 4 of 5, not in the top 3
    assert lab09.ndcg_from_scores(s, [1, 2], k=10)[0].item() == pytest.approx(1 / math.log2(6))
    s = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    assert lab09.ndcg_from_scores(s, [1], k=3).item() == pytest.approx(1 / math.log2(3))
    seen = torch.tensor([[False, False, True, False, False, False]])
    assert lab09.ndcg_from_scores(s, [1], seen, k=3).item() == pytest.approx(1.0)


def test_mask_appended_inputs():
    x = lab09.mask_appended_inputs([np.array([1, 2, 3]), np.array([], dtype=np.int64), np.arange(1, 9)], 4, 99)
    assert x.tolist() == [[1, 2, 3, 99], [0, 0, 0, 99], [6, 7, 8, 99]]


def test_ndcg_from_scores_agrees_with_the_evaluator_on_repeats():
    """The lab's reference and metrics.evaluate share one definition of "seen": a held-out item the user
    had already seen is excluded like every seen item (NDCG 0), on toy data where such repeats occur."""
    split = prep.leave_one_out(data.synthetic_sequences(n_users=100, n_items=30, length=10, seed=2))
    table = np.random.default_rng(0).random((split.n_users + 1, split.n_items + 1)).astype(np.float32)

    class Fixed:
        n_items = split.n_items

        def score(self, users, histories):
            return table[np.asarray(users)]

    t = split.targets("test").sort_values("user")
    seen = split.seen_matrix("test")[t.user.to_numpy()].toarray() > 0
    repeat = seen[np.arange(len(t)), t.item.to_numpy()]
    assert repeat.any()
    ndcg = lab09.ndcg_from_scores(table[t.user.to_numpy()], t.item.to_numpy(), seen)
    assert (ndcg[torch.from_numpy(repeat)] == 0).all()
    assert float(ndcg.mean()) == pytest.approx(metrics.evaluate(Fixed(), split)["NDCG@10"], rel=1e-6)
