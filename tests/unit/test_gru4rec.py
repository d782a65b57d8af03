"""GRU4Rec against a GRU computed by hand, and its loss against its own scores."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from course_lib import metrics, prep
from course_lib.models.gru4rec import GRU4Rec, GRU4RecConfig, right_align
from course_lib.seqdata import session_parallel_batches
from course_lib.train import train


def sig(x):
    return 1 / (1 + math.exp(-x))


def hand_model(max_len=5):
    """2 items, 1-d embeddings, 1-d hidden state, every weight set by hand."""
    m = GRU4Rec(2, GRU4RecConfig(max_len=max_len, emb_dim=1, hidden=1, dropout=0.0))
    with torch.no_grad():
        m.item_emb.weight.copy_(torch.tensor([[0.0], [1.0], [-1.0]]))
        m.gru.weight_ih_l0.copy_(torch.tensor([[0.5], [-0.5], [1.0]]))   # rows: r, z, n
        m.gru.weight_hh_l0.copy_(torch.tensor([[0.3], [0.2], [-0.4]]))
        m.gru.bias_ih_l0.copy_(torch.tensor([0.1, 0.0, 0.0]))
        m.gru.bias_hh_l0.copy_(torch.tensor([0.0, 0.1, 0.2]))
        m.out.weight.copy_(torch.tensor([[0.0], [2.0], [-1.0]]))
        m.out.bias.copy_(torch.tensor([0.0, 0.1, -0.1]))
    return m


def hand_gru(xs):
    """The GRU equations of the module docstring, with the numbers above, one scalar at a time."""
    h = 0.0
    for x in xs:
        r = sig(0.5 * x + 0.1 + 0.3 * h + 0.0)
        z = sig(-0.5 * x + 0.0 + 0.2 * h + 0.1)
        n = math.tanh(1.0 * x + 0.0 + r * (-0.4 * h + 0.2))
        h = (1 - z) * n + z * h
    return h


def test_scores_match_the_hand_computed_gru():
    m = hand_model()
    # history [1, 2]: embeddings x = 1 then x = -1
    h2 = hand_gru([1.0, -1.0])
    # step 1: r = s(0.6), z = s(-0.4), n = tanh(1 + 0.2 r) -> h1 = 0.4838...
    assert hand_gru([1.0]) == pytest.approx((1 - sig(-0.4)) * math.tanh(1 + 0.2 * sig(0.6)))
    s = m.score(np.array([1]), [np.array([1, 2])])
    assert s.shape == (1, 3) and s.dtype == torch.float32
    np.testing.assert_allclose(s[0].numpy(), [0.0, 2 * h2 + 0.1, -h2 - 0.1], rtol=1e-5, atol=1e-6)
    # an empty history: h = 0, the scores are the output bias
    np.testing.assert_allclose(m.score(np.array([1]), [np.array([], dtype=np.int64)])[0].numpy(), [0, 0.1, -0.1])


def test_padding_and_truncation():
    m = hand_model(max_len=3)
    hist = [np.array([2, 1, 1, 2]), np.array([1, 2]), np.array([1])]
    s = m.score(np.arange(3), hist)
    for row, xs in zip(s, [[1, 1, -1], [1, -1], [1]]):  # the first history is cut to its last 3 items
        h = hand_gru(xs)
        np.testing.assert_allclose(row.numpy(), [0, 2 * h + 0.1, -h - 0.1], rtol=1e-5, atol=1e-6)
    long = hand_model(max_len=8).score(np.arange(2), hist[1:])
    np.testing.assert_allclose(long.numpy(), s[1:].numpy(), rtol=1e-6)  # more padding, same scores


def test_right_align():
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    r, n = right_align(x)
    assert r.tolist() == [[3, 4, 5, 0, 0], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]] and n.tolist() == [3, 5, 0]


def test_loss_equals_cross_entropy_of_the_scores_of_every_prefix():
    torch.manual_seed(0)
    m = GRU4Rec(9, GRU4RecConfig(max_len=4, emb_dim=5, hidden=6, dropout=0.0))
    batch = torch.tensor([[0, 0, 3, 1, 7], [2, 9, 4, 4, 8], [0, 0, 0, 5, 6]])
    terms = []
    for row in batch.tolist():
        items = [i for i in row if i]
        for t in range(1, len(items)):
            s = m.score(np.array([0]), [np.array(items[:t])])
            terms.append(F.cross_entropy(s, torch.tensor([items[t]])))
    assert len(terms) == 2 + 4 + 1
    assert m.loss(batch).item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_bpr_loss_by_hand():
    torch.manual_seed(0)
    m = GRU4Rec(9, GRU4RecConfig(max_len=3, emb_dim=4, hidden=4, dropout=0.0, loss="bpr", n_negatives=5))
    batch = torch.tensor([[0, 3, 1, 7]])
    torch.manual_seed(1)
    got = m.loss(batch)
    torch.manual_seed(1)
    neg = torch.randint(1, 10, (2, 5))
    terms = []
    for t, (hist, target) in enumerate([([3], 1), ([3, 1], 7)]):
        s = m.score(np.array([0]), [np.array(hist)])[0]
        terms.append(-F.logsigmoid(s[target] - s[neg[t]]))
    assert got.item() == pytest.approx(torch.cat(terms).mean().item(), rel=1e-5)


def test_session_parallel_steps_reproduce_the_scores():
    torch.manual_seed(0)
    m = GRU4Rec(14, GRU4RecConfig(max_len=10, emb_dim=4, hidden=5, dropout=0.0)).eval()
    sessions = [[1, 2, 3, 4], [5, 6], [7, 8, 9], [10, 11], [12, 13, 14]]
    read = {0: [], 1: [], 2: []}
    hidden = None
    with torch.no_grad():
        for inputs, targets, reset in session_parallel_batches(sessions, 3):
            if hidden is not None:
                hidden = hidden * torch.as_tensor(~reset)[None, :, None]
            h, hidden = m.step(torch.as_tensor(inputs), hidden)
            for lane in range(3):
                if reset[lane]:
                    read[lane] = []
                if inputs[lane]:
                    read[lane].append(int(inputs[lane]))
                    ref = m.score(np.array([0]), [np.array(read[lane])])[0]
                    np.testing.assert_allclose(m.out(h[lane]).numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def cyclic_split(n_users=40, n_items=12, length=10, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(u, (s + t) % n_items + 1, 4.0, t) for u in range(1, n_users + 1)
            for s in [int(rng.integers(0, n_items))] for t in range(length)]
    return prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]))


@pytest.mark.parametrize("loss", ["ce", "bpr"])
def test_learns_a_cycle_with_the_shared_trainer(loss):
    split = cyclic_split()
    m = GRU4Rec(split.n_items, GRU4RecConfig(max_len=6, emb_dim=8, hidden=16, dropout=0.0, loss=loss, n_negatives=4))
    hist = train(m, split, epochs=25, batch_size=8, lr=0.02, patience=5, progress=False, seed=0)
    assert hist.best_score > 0.9, hist.frame()
    assert metrics.evaluate(m, split, "test")["NDCG@10"] > 0.9


def test_session_parallel_training_learns():
    split = cyclic_split()
    m = GRU4Rec(split.n_items, GRU4RecConfig(max_len=6, emb_dim=8, hidden=16, dropout=0.0))
    m.fit(split, batching="session_parallel", epochs=8, patience=8, batch_size=8, lr=0.02, progress=False)
    losses = m.history_.frame()["loss"].tolist()
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    assert metrics.evaluate(m, split, "valid")["NDCG@10"] > 0.8


def test_session_parallel_needs_a_recurrent_model():
    from course_lib.models.sasrec import SASRec

    split = cyclic_split()
    with pytest.raises(TypeError, match="session_parallel_loss"):
        SASRec(split.n_items, max_len=6, hidden=8).fit(split, batching="session_parallel", epochs=1)


def test_fit_uses_the_models_training_defaults_under_the_callers_options(monkeypatch):
    import course_lib.train as T

    seen = {}
    monkeypatch.setattr(T, "train", lambda model, split, **options: seen.update(options) or "history")
    split = cyclic_split()
    m = GRU4Rec(split.n_items, max_len=6, emb_dim=8, hidden=16).fit(split, lr=0.5, progress=False)
    assert m.history_ == "history"
    assert seen == {**GRU4Rec.train_defaults, "lr": 0.5, "progress": False}


def test_fit_score_recommend_and_overrides():
    split = cyclic_split()
    a = GRU4Rec(split.n_items, max_len=6, emb_dim=8, hidden=16, dropout=0.0)
    b = GRU4Rec(split.n_items, GRU4RecConfig(max_len=6, emb_dim=8, hidden=16, dropout=0.0))
    assert a.config == b.config and "hidden=16" in repr(a) and "parameters" in repr(a)
    assert a.fit(split, epochs=2, batch_size=8, progress=False) is a and a.history_.epochs == 2
    recs = a.recommend([1, 2], [np.array([1, 2]), np.array([3])], k=3)
    assert recs.shape == (2, 3) and not a.training
    with pytest.raises(TypeError, match="expected a GRU4RecConfig"):
        GRU4Rec(split.n_items, config=object())
    with pytest.raises(TypeError, match="no field"):
        GRU4Rec(split.n_items, hiden=16)


def test_score_restores_the_mode_and_bad_config():
    m = GRU4Rec(5, GRU4RecConfig(max_len=3, emb_dim=2, hidden=2))
    m.train()
    m.score(np.array([1]), [np.array([1, 2])])
    assert m.training
    with pytest.raises(ValueError):
        m.score(np.array([1]), [np.array([1, 99])])   # an unknown item: an error, and the mode comes back
    assert m.training
    with pytest.raises(ValueError, match="loss"):
        GRU4RecConfig(loss="hinge")
    with pytest.raises(ValueError, match="n_items"):
        GRU4Rec(0)
