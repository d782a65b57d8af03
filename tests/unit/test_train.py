"""The shared trainer on a tiny synthetic split: it learns, stops early, restores, reproduces."""
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import course_lib.train as T
from course_lib import prep
from course_lib.models.base import Recommender


@dataclass
class TinyConfig:
    max_len: int = 4
    dim: int = 8
    dropout: float = 0.1


class LastItem(nn.Module, Recommender):
    """The smallest model of the contract: logits of the next item from the last item's embedding."""

    def __init__(self, n_items, config=None):
        super().__init__()
        self.n_items, self.config = n_items, config or TinyConfig()
        self.emb = nn.Embedding(n_items + 1, self.config.dim, padding_idx=0)
        self.drop = nn.Dropout(self.config.dropout)
        self.out = nn.Linear(self.config.dim, n_items + 1)

    def loss(self, batch):
        x, y = batch[:, :-1], batch[:, 1:]
        logits = self.out(self.drop(self.emb(x)))
        return nn.functional.cross_entropy(logits.reshape(-1, self.n_items + 1), y.reshape(-1), ignore_index=0)

    def score(self, users, histories):
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        with torch.no_grad():
            last = torch.as_tensor(prep.pad_sequences(histories, 1), device=dev)[:, 0]
            s = self.out(self.emb(last))
        self.train(was)
        return s


def cyclic_split(n_users=40, n_items=12, length=9, seed=0):
    """Each user walks the cycle 1 -> 2 -> ... -> n_items -> 1 from a random start: the next item is learnable."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        start = int(rng.integers(0, n_items))
        for t in range(length):
            rows.append((u, (start + t) % n_items + 1, 4.0, t))
    return prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]))


def test_training_sequences_are_left_padded_train_histories():
    split = cyclic_split(n_users=3, length=5)
    seqs = T.training_sequences(split, max_len=4)
    assert seqs.dtype == torch.int64 and seqs.shape == (3, 5)
    hist = split.training_histories()
    for r, u in enumerate(range(1, 4)):
        assert seqs[r].tolist() == [0, 0] + hist[u].tolist()  # 3 training items, the 2 held out are absent
    short = T.training_sequences(split, max_len=1)
    assert short.shape == (3, 2) and short[0].tolist() == hist[1][-2:].tolist()


def test_training_sequences_bad_input():
    split = cyclic_split(n_users=3, length=3)  # one training item per user: nothing to predict
    with pytest.raises(ValueError, match="two or more"):
        T.training_sequences(split, 4)
    with pytest.raises(ValueError, match="max_len"):
        T.training_sequences(cyclic_split(), 0)


def test_train_learns_and_loss_decreases():
    split = cyclic_split()
    torch.manual_seed(0)
    model = LastItem(split.n_items)
    hist = T.train(model, split, epochs=15, batch_size=8, lr=0.05, patience=100, progress=False, device="cpu")
    df = hist.frame()
    assert list(df.index) == list(range(1, 16)) and hist.epochs == 15
    assert df["loss"].iloc[-1] < 0.5 * df["loss"].iloc[0], df["loss"].tolist()
    assert hist.best_score > 0.9  # the cycle is deterministic: the next item is ranked first
    assert hist.best_epoch == int(df["valid_NDCG@10"].idxmax())
    assert hist.seconds > 0 and not model.training


def test_seeding_reproduces_the_history():
    split = cyclic_split()
    # two identically built models, trained with the same seed, end identical (shuffling and dropout are seeded)
    model_a, model_b = LastItem(split.n_items), LastItem(split.n_items)
    model_b.load_state_dict(model_a.state_dict())
    ha = T.train(model_a, split, epochs=3, batch_size=8, lr=0.01, progress=False, seed=7)
    hb = T.train(model_b, split, epochs=3, batch_size=8, lr=0.01, progress=False, seed=7)
    pd.testing.assert_frame_equal(ha.frame().drop(columns="seconds"), hb.frame().drop(columns="seconds"))
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)
    hc = T.train(LastItem(split.n_items), split, epochs=3, batch_size=8, lr=0.01, progress=False, seed=8)
    assert not np.allclose(ha.frame()["loss"], hc.frame()["loss"])


def test_early_stopping_restores_the_best_epoch(monkeypatch):
    split = cyclic_split()
    scripted = [0.10, 0.30, 0.25, 0.20, 0.35, 0.05]  # best at epoch 2; patience 2 stops after epoch 4
    snapshots = {}

    def fake_evaluate(model, split, stage="test", ks=(10,)):
        assert stage == "valid"
        epoch = len(snapshots) + 1
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"NDCG@10": scripted[epoch - 1], "HR@10": 2 * scripted[epoch - 1]}

    monkeypatch.setattr(T, "evaluate", fake_evaluate)
    model = LastItem(split.n_items)
    hist = T.train(model, split, epochs=6, batch_size=8, lr=0.05, patience=2, progress=False)
    assert hist.epochs == 4, "training should stop after two evaluations without improvement"
    assert hist.best_epoch == 2 and hist.best_score == pytest.approx(0.30)
    assert hist.frame().loc[2, "valid_HR@10"] == pytest.approx(0.60)
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[2][k]), f"{k} was not restored to the best epoch"
    assert not torch.equal(snapshots[2]["out.weight"], snapshots[4]["out.weight"])


def test_eval_every_and_max_batches(monkeypatch):
    split = cyclic_split()
    calls = []
    real = T.evaluate
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    seen = []
    model = LastItem(split.n_items)
    orig = model.loss
    model.loss = lambda b: seen.append(len(b)) or orig(b)
    hist = T.train(model, split, epochs=5, eval_every=2, batch_size=8, max_batches=2, progress=False)
    assert len(calls) == 3  # epochs 2, 4 and the last one
    assert len(seen) == 10 and all(s == 8 for s in seen)
    df = hist.frame()
    assert df["valid_NDCG@10"].isna().tolist() == [True, False, True, False, False]


def test_config_errors():
    split = cyclic_split()
    with pytest.raises(TypeError, match="unknown training option"):
        T.train(LastItem(split.n_items), split, epoch=3)
    with pytest.raises(ValueError, match="epochs"):
        T.TrainConfig(epochs=0)
    with pytest.raises(TypeError, match="loss"):
        T.train(object(), split)


def test_lr_factor_schedules():
    from course_lib.train import lr_factor

    total = 100
    assert [lr_factor(s, total) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    lin = [lr_factor(s, total, "linear") for s in range(total)]
    assert lin[0] == 1.0 and lin[50] == pytest.approx(0.5) and all(a > b for a, b in zip(lin, lin[1:]))
    cos = [lr_factor(s, total, "cosine") for s in range(total)]
    assert cos[0] == 1.0 and cos[50] == pytest.approx(0.5) and cos[-1] < 0.01
    warm = [lr_factor(s, total, "linear", warmup=0.1) for s in range(total)]
    assert warm[0] == pytest.approx(0.1) and warm[9] == pytest.approx(1.0)   # 10 warm-up steps up to lr
    assert all(a < b for a, b in zip(warm[:9], warm[1:10])) and warm[10] == pytest.approx(1.0)


def test_schedule_decays_the_optimiser_rate(monkeypatch):
    split = cyclic_split()
    seen = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    T.train(LastItem(split.n_items), split, epochs=2, batch_size=8, lr=0.01, patience=5, progress=False,
            schedule="linear", warmup=0.2)
    n = len(seen)  # 2 epochs of 5 batches
    assert n == 10 and seen[0] == pytest.approx(0.005) and seen[1] == pytest.approx(0.01)  # 2 warm-up steps
    assert seen[2] == pytest.approx(0.01) and all(a > b for a, b in zip(seen[2:], seen[3:]))
    assert seen[-1] == pytest.approx(0.01 / 8)  # linear: 7 of the 8 decay steps taken
    with pytest.raises(ValueError, match="schedule"):
        T.train(LastItem(split.n_items), split, epochs=1, schedule="step")
