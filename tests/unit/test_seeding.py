"""Same seed, same result, in one process: for every model that takes a seed.

Neural models are built from the global RNG; ``train(model, split, seed=s)`` re-initialises
them from ``s`` (``reset_parameters``), so what the process did before never matters.
Models that train inside ``fit`` (MF, BPR, ALS, item2vec) draw only from their config seed.
"""
import numpy as np
import pandas as pd
import pytest
import torch

from course_lib import prep
from course_lib.env import seed_everything
from course_lib.data import synthetic_sequences
from course_lib.models import (ALS, BERT4Rec, BERT4RecConfig, BPRMF, ExplicitMF, GRU4Rec, GRU4RecConfig, Item2Vec,
                               SASRec, SASRecConfig)
from course_lib.train import reset_parameters, train

pytestmark = pytest.mark.unit

NEURAL = {
    "SASRec": lambda n: SASRec(n, SASRecConfig(max_len=8, hidden=16, dropout=0.3)),
    "BERT4Rec": lambda n: BERT4Rec(n, BERT4RecConfig(max_len=8, hidden=16, dropout=0.3)),
    "BERT4Rec-causal": lambda n: BERT4Rec(n, BERT4RecConfig(max_len=8, hidden=16, bidirectional=False)),
    "GRU4Rec-ce": lambda n: GRU4Rec(n, GRU4RecConfig(max_len=8, emb_dim=8, hidden=16, dropout=0.3)),
    "GRU4Rec-bpr": lambda n: GRU4Rec(n, GRU4RecConfig(max_len=8, emb_dim=8, hidden=16, loss="bpr", n_negatives=4)),
    "GRU4Rec-2layers": lambda n: GRU4Rec(n, GRU4RecConfig(max_len=8, emb_dim=8, hidden=16, layers=2)),
}


@pytest.fixture(scope="module")
def split():
    return prep.leave_one_out(synthetic_sequences(n_users=60, n_items=30, length=10, seed=0))


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def _run(build, split, seed, before, **kw):
    torch.manual_seed(before)  # the global RNG wherever the process left it: different before each run
    model = build(split.n_items)
    hist = train(model, split, epochs=2, batch_size=16, max_batches=3, progress=False, device="cpu", seed=seed, **kw)
    return model, hist.frame().drop(columns="seconds")


@pytest.mark.parametrize("name", sorted(NEURAL))
def test_train_twice_with_one_seed_gives_one_result(name, split):
    build = NEURAL[name]
    a, fa = _run(build, split, seed=42, before=1)
    b, fb = _run(build, split, seed=42, before=2)
    pd.testing.assert_frame_equal(fa, fb)
    assert _same_weights(a, b)
    c, fc = _run(build, split, seed=43, before=1)
    assert not _same_weights(a, c)


@pytest.mark.parametrize("name", sorted(NEURAL))
def test_reset_parameters_gives_the_model_built_after_seeding(name):
    """The promise train() keeps: its weights are those of a model built right after seed_everything(seed)."""
    build = NEURAL[name]
    seed_everything(7)
    fresh = build(25)
    other = build(25)  # drawn later: different weights
    assert not _same_weights(fresh, other)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)  # as if trained
    state = torch.get_rng_state()
    reset_parameters(other, 7)
    assert _same_weights(fresh, other)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left as it was


def test_reinit_false_continues_from_the_current_weights(split):
    model = NEURAL["SASRec"](split.n_items)
    train(model, split, epochs=1, max_batches=2, progress=False, device="cpu", seed=1)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    seed_everything(1)
    fresh = NEURAL["SASRec"](split.n_items)
    assert not _same_weights(model, fresh)
    train(model, split, epochs=1, max_batches=1, lr=0.0, progress=False, device="cpu", seed=1, reinit=False)
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())  # lr 0: nothing moved, nothing reset


@pytest.mark.parametrize("loss", ["ce", "bpr"])
def test_session_parallel_training_twice_with_one_seed(loss, split):
    runs = []
    for before in (1, 2):
        torch.manual_seed(before)
        model = GRU4Rec(split.n_items, GRU4RecConfig(max_len=8, emb_dim=8, hidden=16, loss=loss, n_negatives=4))
        hist = train(model, split, batching="session_parallel", epochs=1, batch_size=8, seed=5, max_batches=5,
                     progress=False, device="cpu")
        runs.append((model, hist.frame()["loss"].tolist()))
    assert runs[0][1] == runs[1][1]
    assert _same_weights(runs[0][0], runs[1][0])


CLASSIC = {
    "ExplicitMF": lambda: ExplicitMF(factors=4, epochs=2, device="cpu", seed=3),
    "BPRMF": lambda: BPRMF(factors=4, epochs=2, device="cpu", seed=3),
    "ALS": lambda: ALS(factors=4, iterations=2, device="cpu", seed=3),
    "Item2Vec": lambda: Item2Vec(dim=4, epochs=2, device="cpu", seed=3),
}


@pytest.mark.parametrize("name", sorted(CLASSIC))
def test_fit_twice_with_one_seed_gives_one_result(name, split):
    outs = []
    for before in (1, 2):
        seed_everything(before)  # global RNGs in different states before each fit
        model = CLASSIC[name]().fit(split)
        outs.append(np.asarray(torch.as_tensor(model.score(np.arange(1, 6), split.history("test")[1:6]))))
    np.testing.assert_array_equal(outs[0], outs[1])
