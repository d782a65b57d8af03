"""BERT4Rec: the masking function, the loss on masked positions only, the [MASK] inference trick."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from course_lib.prep import pad_sequences
from course_lib.models.bert4rec import BERT4Rec, BERT4RecConfig, mask_items


def small(n_items=20, **kw):
    torch.manual_seed(0)
    cfg = dict(max_len=8, hidden=16, n_blocks=2, n_heads=2, dropout=0.0)
    cfg.update(kw)
    return BERT4Rec(n_items, BERT4RecConfig(**cfg)).eval()


# ----------------------------------------------------------------------------- masking


def test_mask_items_properties():
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(1, 50, (400, 30), generator=g)
    seq[:, :10] = 0  # left padding
    inputs, labels = mask_items(seq, mask_token=51, mask_prob=0.3, generator=g)
    assert inputs.shape == seq.shape and labels.shape == seq.shape
    masked = inputs == 51
    assert (seq[masked] != 0).all(), "padding is never masked"
    assert (inputs[seq == 0] == 0).all() and (labels[seq == 0] == 0).all()
    assert torch.equal(labels[masked], seq[masked]), "labels hold the hidden items"
    assert (labels[~masked] == 0).all(), "labels are 0 where nothing was hidden"
    assert torch.equal(inputs[~masked], seq[~masked]), "unmasked items are left alone"
    rate = masked.sum().item() / (seq != 0).sum().item()
    assert abs(rate - 0.3) < 0.02


def test_mask_items_edges_and_reproducibility():
    seq = torch.tensor([[0, 0, 3, 4, 5]])
    i0, l0 = mask_items(seq, 9, 0.0)
    assert torch.equal(i0, seq) and (l0 == 0).all()
    i1, l1 = mask_items(seq, 9, 1.0)
    assert i1.tolist() == [[0, 0, 9, 9, 9]] and l1.tolist() == [[0, 0, 3, 4, 5]]
    a = mask_items(seq.repeat(50, 1), 9, 0.5, torch.Generator().manual_seed(3))
    b = mask_items(seq.repeat(50, 1), 9, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError):
        mask_items(seq, 9, 1.5)


# ----------------------------------------------------------------------------- model


def test_vocabulary_and_config():
    m = small(n_items=20)
    assert m.mask_token == 21 and m.item_emb.num_embeddings == 22
    assert m.item_emb.padding_idx == 0
    assert not m.causal and small(bidirectional=False).causal
    with pytest.raises(TypeError):
        BERT4Rec(20, object())
    with pytest.raises(ValueError):
        BERT4RecConfig(mask_prob=-0.1)


def test_bidirectional_sees_the_future_causal_does_not():
    a = torch.tensor([[0, 0, 3, 5, 7, 2, 9, 4]])
    b = a.clone()
    b[0, 7] = 11
    for bidirectional in (True, False):
        m = small(bidirectional=bidirectional)
        changed = not torch.allclose(m(a)[0, :7], m(b)[0, :7], atol=1e-5)
        assert changed == bidirectional


def test_padding_does_not_leak():
    m = small()
    seq = torch.tensor([[0, 0, 0, 3, 5, 21, 2, 9]])
    before = m(seq)[0, 3:].clone()
    with torch.no_grad():
        m.pos_emb.weight[:3] += 5 * torch.randn(3, 16)
    assert torch.allclose(m(seq)[0, 3:], before, atol=1e-5)


def test_loss_only_on_masked_positions():
    m = small(mask_prob=0.5, last_item_prob=0.0)
    batch = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
    torch.manual_seed(5)
    loss = m.loss(batch)
    torch.manual_seed(5)  # replay the same draw by hand
    seq = batch[:, 1:]
    inputs, labels = mask_items(seq, m.mask_token, 0.5)
    torch.rand(2)  # the last-item draw
    assert (labels != 0).any(1).all(), "choose a seed that masks something in every row"
    h = m(inputs)
    keep = labels != 0
    expected = F.cross_entropy(h[keep] @ m.item_emb.weight[:21].T, labels[keep])
    assert torch.allclose(loss, expected, atol=1e-5)


def test_every_row_gets_a_mask():
    m = small(mask_prob=0.0, last_item_prob=0.0)
    batch = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 8, 9]])
    # with no random mask, the last item is hidden: loss = CE of predicting 9 there
    inputs = torch.tensor([[0, 0, 4, 5, 6, 7, 8, 21]])
    expected = F.cross_entropy(m(inputs)[:, -1] @ m.item_emb.weight[:21].T, torch.tensor([9]))
    assert torch.allclose(m.loss(batch), expected, atol=1e-5)


def test_score_appends_mask_and_truncates():
    m = small(n_items=20, max_len=5).train()
    hist = [np.array([1, 2, 3]), np.arange(1, 13)]
    s = m.score(np.array([1, 2]), hist)
    assert s.shape == (2, 21) and s.dtype == torch.float32 and m.training
    m.eval()
    by_hand = m(torch.tensor([[0, 1, 2, 3, 21], [9, 10, 11, 12, 21]]))[:, -1] @ m.item_emb.weight[:21].T
    assert torch.allclose(s, by_hand, atol=1e-5)


def test_learns_to_fill_in_from_context():
    """Each row repeats one item: a [MASK] can only be filled in by attending to the other positions."""
    torch.manual_seed(0)
    n = 30
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 10, size=96)
    rows = [np.full(length, item) for item, length in zip(rng.integers(1, n + 1, size=96), lengths)]
    batch = torch.from_numpy(pad_sequences(rows, 9))
    m = BERT4Rec(n, BERT4RecConfig(max_len=8, hidden=32, n_blocks=1, n_heads=1, dropout=0.0,
                                   mask_prob=0.3, last_item_prob=0.3))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    losses = []
    for _ in range(40):
        loss = m.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])
    items = [int(r[0]) for r in rows[:3]]  # items seen in training, asked with other lengths
    top = m.score(np.arange(3), [np.full(3, items[0]), np.full(2, items[1]), np.full(1, items[2])]).argmax(1)
    assert top.tolist() == items


def test_mask_items_ensure_one_masks_the_last_item_of_rows_the_draw_missed():
    from course_lib.models.bert4rec import mask_items

    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    inputs, labels = mask_items(seq, 9, 0.0, ensure_one=True)       # the draw hides nothing
    assert labels.tolist() == [[0, 0, 0, 0, 5], [0, 0, 0, 0, 5], [0, 0, 0, 0, 0]]
    assert inputs[:, -1].tolist() == [9, 9, 0] and (inputs[:, :-1] == seq[:, :-1]).all()
    plain, _ = mask_items(seq, 9, 0.0)
    assert torch.equal(plain, seq)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, la = mask_items(seq, 9, 0.5, g1, ensure_one=True)
    b, lb = mask_items(seq, 9, 0.5, g2)
    drawn = lb != 0
    assert torch.equal(la[drawn], lb[drawn])   # the same draw; ensure_one only adds masks
    assert ((la != 0).sum(1) >= (seq[:, -1] != 0).long()).all()


def test_sasrec_embed_is_embed_positions_scaled():
    from course_lib.models.sasrec import SASRec, embed_positions

    m = SASRec(10, max_len=6, hidden=8, dropout=0.0).eval()
    seq = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    x = embed_positions(seq, m.item_emb, m.pos_emb, scale=8 ** 0.5)
    assert torch.allclose(m.embed(seq), x) and (x[0, :2] == 0).all()
    pos = m.pos_emb.weight[2:6]                                     # the most recent item gets position max_len - 1
    assert torch.allclose(embed_positions(seq, m.item_emb, m.pos_emb)[1], m.item_emb(seq[1]) + pos)
