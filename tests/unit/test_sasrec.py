"""SASRec: attention against torch's reference, causality, padding, scores, and that it learns."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from course_lib import metrics, prep
from course_lib.models.sasrec import (SASRec, SASRecConfig, causal_mask, padding_attention_mask,
                                      scaled_dot_product_attention)
from course_lib.train import train


def small(n_items=20, **kw):
    torch.manual_seed(0)
    cfg = dict(max_len=8, hidden=16, n_blocks=2, n_heads=2, dropout=0.0)
    cfg.update(kw)
    return SASRec(n_items, SASRecConfig(**cfg)).eval()


# ----------------------------------------------------------------------------- attention


def test_causal_mask_is_lower_triangle():
    m = causal_mask(4)
    assert m.dtype == torch.bool
    assert m.tolist() == [[True, False, False, False], [True, True, False, False],
                          [True, True, True, False], [True, True, True, True]]
    with pytest.raises(ValueError):
        causal_mask(0)


def test_attention_matches_torch_reference():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 6, 5, generator=g) for _ in range(3))
    out, w = scaled_dot_product_attention(q, k, v, causal_mask(6))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 6), atol=1e-6)
    assert (w.triu(1) == 0).all()
    # an arbitrary boolean mask, broadcast over heads
    mask = torch.rand(2, 1, 6, 6, generator=g) > 0.4
    mask |= torch.eye(6, dtype=torch.bool)
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)
    # no mask: plain softmax attention
    out, _ = scaled_dot_product_attention(q, k, v)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5)


def test_padding_mask_hides_padding_keys():
    seq = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    m = padding_attention_mask(seq, causal=True)[:, 0]
    assert m.shape == (2, 4, 4)
    assert not m[0, 2:, :2].any()           # items never look at padding
    assert m[0, 3].tolist() == [False, False, True, True]
    assert m[1].equal(causal_mask(4))
    bi = padding_attention_mask(seq, causal=False)[:, 0]
    assert bi[0, 2].tolist() == [False, False, True, True]  # bidirectional: sees the future item too


# ----------------------------------------------------------------------------- model


def test_causal_future_item_does_not_change_the_past():
    m = small()
    a = torch.tensor([[0, 0, 3, 5, 7, 2, 9, 4]])
    b = a.clone()
    b[0, 6:] = torch.tensor([11, 12])
    ha, hb = m(a), m(b)
    assert torch.allclose(ha[0, :6], hb[0, :6], atol=1e-6)
    assert not torch.allclose(ha[0, 6:], hb[0, 6:], atol=1e-4)


def test_padding_does_not_leak():
    m = small()
    seq = torch.tensor([[0, 0, 0, 3, 5, 7, 2, 9]])
    before = m(seq)[0, 3:].clone()
    # the same items without padding give the same states (positions count from the right end)
    assert torch.allclose(m(seq[:, 3:])[0], before, atol=1e-5)
    with torch.no_grad():  # scramble what padding positions could carry
        m.pos_emb.weight[:3] += 5 * torch.randn(3, 16)
        m.item_emb.weight[0] = torch.randn(16)
    assert torch.allclose(m(seq)[0, 3:], before, atol=1e-5)


def test_score_shape_truncation_and_mode():
    m = small(n_items=20, max_len=5).train()
    hist = [np.array([1, 2, 3]), np.arange(1, 13), np.array([], dtype=np.int64)]
    s = m.score(np.array([1, 2, 3]), hist)
    assert isinstance(s, torch.Tensor) and s.shape == (3, 21) and s.dtype == torch.float32
    assert torch.isfinite(s).all()
    assert m.training, "score() must restore training mode"
    s_last = m.score(np.array([2]), [np.arange(8, 13)])  # only the last max_len items count
    assert torch.allclose(s[1], s_last[0], atol=1e-5)
    with pytest.raises(ValueError, match="users"):
        m.score(np.array([1, 2]), hist)


def test_bad_ids_raise_clear_errors():
    m = small(n_items=10)
    with pytest.raises(ValueError, match="item IDs"):
        m.score(np.array([1]), [np.array([3, 11])])
    with pytest.raises(ValueError, match="max_len"):
        m(torch.ones(1, 9, dtype=torch.long))
    with pytest.raises(ValueError):
        SASRecConfig(hidden=10, n_heads=3)


def test_loss_is_cross_entropy_on_non_padding_targets():
    m = small(n_items=20)
    batch = torch.tensor([[0, 0, 0, 0, 0, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
    h = m(batch[:, :-1])
    logits = h @ m.item_emb.weight.T
    tgt = batch[:, 1:]
    keep = (tgt != 0) & (batch[:, :-1] != 0)
    expected = F.cross_entropy(logits[keep], tgt[keep])
    assert torch.allclose(m.loss(batch), expected, atol=1e-5)
    # a left-padded row gives the same loss as the same row without padding
    assert torch.allclose(m.loss(batch[:1]), m.loss(batch[:1, 5:]), atol=1e-5)


def test_attention_weights_shape_and_rows():
    m = small(n_items=20, max_len=6)
    w = m.attention_weights(np.array([0, 3, 4, 5, 6, 7, 8]))  # longer than max_len: last 6 kept
    assert w.shape == (2, 1, 2, 6, 6)
    assert torch.allclose(w.sum(-1), torch.ones(2, 1, 2, 6), atol=1e-5)
    assert (w.triu(1) == 0).all()


def test_learns_successor_task():
    """Item i is always followed by i + 1: a few steps must cut the loss and get it right."""
    torch.manual_seed(0)
    n = 30
    rng = np.random.default_rng(0)
    starts = rng.integers(1, n - 9, size=64)
    batch = torch.from_numpy(np.stack([np.arange(s, s + 9) for s in starts]))
    m = SASRec(n, SASRecConfig(max_len=8, hidden=32, n_blocks=1, n_heads=1, dropout=0.0))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = float(m.loss(batch).detach())
    for _ in range(40):
        loss = m.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first
    top = m.score(np.arange(3), [np.array([4, 5, 6]), np.array([10]), np.array([17, 18])]).argmax(1)
    assert top.tolist() == [7, 11, 19]


def test_trains_with_course_trainer_and_evaluates():
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 41):  # successor task as a data set: user u walks s, s+1, ...
        s = int(rng.integers(1, 15))
        rows += [(u, s + t, t) for t in range(8)]
    split = prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "timestamp"]))
    torch.manual_seed(0)
    m = SASRec(split.n_items, SASRecConfig(max_len=8, hidden=32, n_blocks=1, dropout=0.0))
    hist = train(m, split, epochs=25, lr=1e-2, patience=25, progress=False, device="cpu")
    res = metrics.evaluate(m, split, "test")
    assert hist.best_score > 0.5 and res["HR@10"] > 0.8
