"""Quality at MovieLens scale: the course's models, briefly trained on all of ml-100k, against the baselines.

The unit tests run on toy data; these catch what only shows on the real data (a leak of the
held-out item, a broken loss that still lowers on a toy task, a scoring off by one column):
each model must land inside a band whose floor is popularity's NDCG@10 with a margin and
whose ceiling no leak-free model reaches (every model of the course, fully trained, stays
below 0.12; a model that sees its test item scores near 1). Budgets are a few epochs, so the
whole file takes about a minute on one CPU thread.
"""
import numpy as np
import pytest
import torch

from course_lib import data, metrics, prep
from course_lib.models import GRU4Rec, MarkovChain, Popularity, SASRec

CEILING = 0.15


@pytest.fixture(scope="module")
def split():
    torch.set_num_threads(1)
    return prep.leave_one_out(data.load_interactions("ml-100k"))


@pytest.fixture(scope="module")
def popularity_ndcg(split):
    return metrics.evaluate(Popularity().fit(split), split)["NDCG@10"]


def test_the_split_is_leave_one_out_by_time(split):
    assert (split.n_users, split.n_items) == (943, 1682)
    assert len(split.valid) == len(split.test) == 943
    t = split.test.set_index("user").timestamp
    v = split.valid.set_index("user").timestamp.loc[t.index]
    before = split.train.groupby("user").timestamp.max().loc[t.index]
    assert (before <= v).all() and (v <= t).all()                 # train, then valid, then test, per user


def test_markov_chain_beats_popularity(split, popularity_ndcg):
    ndcg = metrics.evaluate(MarkovChain().fit(split), split)["NDCG@10"]
    assert popularity_ndcg + 0.02 < ndcg < CEILING, (ndcg, popularity_ndcg)


@pytest.mark.parametrize("model_cls, options", [
    (SASRec, dict(epochs=6, lr=3e-3)),
    (GRU4Rec, dict(epochs=4, lr=3e-3, batch_size=64)),
])
def test_sequential_models_trained_briefly_beat_popularity(split, popularity_ndcg, model_cls, options):
    model = model_cls(split.n_items).fit(split, patience=options["epochs"], seed=0, progress=False, device="cpu",
                                         **options)
    ndcg = metrics.evaluate(model, split)["NDCG@10"]
    assert popularity_ndcg + 0.015 < ndcg < CEILING, (model, ndcg, popularity_ndcg)
    assert model.history_.best_score > popularity_ndcg   # validation agrees with test
