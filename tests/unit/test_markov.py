"""The Markov chain's counts and smoothing against a hand-computed case."""
import numpy as np
import pandas as pd
import pytest

from course_lib import metrics, prep
from course_lib.models.markov import MarkovChain, MarkovConfig, smoothed_probabilities, transition_counts


def test_transition_counts_by_hand():
    C = transition_counts([np.array([1, 2, 1, 2]), np.array([2, 3]), np.array([3])], n_items=3)
    assert C.shape == (4, 4)
    expected = np.zeros((4, 4))
    expected[1, 2] = 2   # 1->2 twice
    expected[2, 1] = 1   # 2->1
    expected[2, 3] = 1   # 2->3 (second history); no 2->3 from 2 at the end of the first
    np.testing.assert_array_equal(C.toarray(), expected)
    with pytest.raises(ValueError, match="1..3"):
        transition_counts([np.array([1, 4])], n_items=3)


def test_smoothing_by_hand():
    counts = np.array([[0, 0, 2, 1], [0, 0, 0, 0]], dtype=float)  # rows: C_i. for one seen item, one unseen
    prior = np.array([0, 0.5, 0.25, 0.25])
    P = smoothed_probabilities(counts, alpha=2.0, prior=prior)
    # (C_ij + 2 * pi_j) / (3 + 2): [0, 1, 2.5, 1.5] / 5
    np.testing.assert_allclose(P[0], [0, 0.2, 0.5, 0.3])
    np.testing.assert_allclose(P[1], prior)  # no data: the prior
    np.testing.assert_allclose(P.sum(1), 1.0)
    np.testing.assert_allclose(smoothed_probabilities(counts, 0.0, prior), [[0, 0, 2 / 3, 1 / 3], [0, 0, 0, 0]])


def tiny_split():
    # user 1: 1 2 3 | valid 1 | test 2;  user 2: 2 3 1 | valid 2 | test 3 ;  user 3: 1 2 | valid 3 | test 1
    seqs = {1: [1, 2, 3, 1, 2], 2: [2, 3, 1, 2, 3], 3: [1, 2, 3, 1]}
    rows = [(u, i, 4.0, t) for u, s in seqs.items() for t, i in enumerate(s)]
    return prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]))


def test_fit_and_score_use_only_the_last_item():
    split = tiny_split()
    m = MarkovChain(config=MarkovConfig(alpha=1.0, prior="uniform")).fit(split)
    # training histories: [1 2 3], [2 3 1], [1 2] -> 1->2 twice, 2->3 twice, 3->1 once
    C = m.counts_.toarray()
    assert C[1, 2] == 2 and C[2, 3] == 2 and C[3, 1] == 1 and C.sum() == 5
    s = m.score(np.array([1, 2]), [np.array([3, 1, 2]), np.array([2])])
    # both histories end with 2: identical scores (goldfish memory); P(3|2) = (2 + 1/3) / (2 + 1)
    np.testing.assert_allclose(s[0], s[1])
    assert s[0, 3] == pytest.approx((2 + 1 / 3) / 3, rel=1e-6)
    assert s[0, 1] == pytest.approx((1 / 3) / 3, rel=1e-6)
    empty = m.score(np.array([1]), [np.array([], dtype=np.int64)])
    np.testing.assert_allclose(empty[0, 1:], 1 / 3, rtol=1e-6)


def test_popularity_prior_and_evaluation():
    split = tiny_split()
    m = MarkovChain(config=MarkovConfig(alpha=0.5)).fit(split)
    pop = split.item_popularity()  # training counts of items 1, 2, 3
    assert m.prior_[0] == 0 and m.prior_[1:] == pytest.approx(pop[1:] / pop.sum(), rel=1e-6)
    res = metrics.evaluate(m, split, "test")
    assert 0 <= res["NDCG@10"] <= 1 and res["users"] == 3
    with pytest.raises(RuntimeError, match="fit"):
        MarkovChain().score(np.array([1]), [np.array([1])])
    with pytest.raises(ValueError, match="prior"):
        MarkovConfig(prior="zipf")
    with pytest.raises(ValueError, match="alpha"):
        MarkovConfig(alpha=-1)


def test_constructor_takes_a_config_or_overrides():
    split = tiny_split()
    a = MarkovChain(alpha=0.5, prior="uniform").fit(split)
    b = MarkovChain(MarkovConfig(alpha=0.5, prior="uniform")).fit(split)
    np.testing.assert_array_equal(a.score(np.array([1]), [np.array([2])]), b.score(np.array([1]), [np.array([2])]))
    given = MarkovConfig(alpha=2.0)
    assert MarkovChain(given, prior="uniform").config == MarkovConfig(alpha=2.0, prior="uniform")
    assert given.prior == "popularity"  # the caller's config is copied, never changed
    with pytest.raises(TypeError, match="has no field 'max_len'"):
        MarkovChain(max_len=3)
    with pytest.raises(ValueError, match="alpha"):
        MarkovChain(alpha=-1.0)
