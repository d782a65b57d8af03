"""Diversity, novelty and history similarity against pairwise brute force."""
import itertools

import numpy as np
import pandas as pd
import pytest

from course_lib import prep
from course_lib.beyond_accuracy import beyond_accuracy, history_similarity, intra_list_diversity, novelty
from course_lib.models.popularity import Popularity


def brute_ild(lst, F):
    lst = [i for i in lst if i > 0]
    d = []
    for a, b in itertools.permutations(lst, 2):
        na, nb = np.linalg.norm(F[a]), np.linalg.norm(F[b])
        d.append(1 - (F[a] @ F[b] / (na * nb) if na > 0 and nb > 0 else 0.0))
    return np.mean(d) if d else np.nan


def test_ild_matches_pairwise():
    rng = np.random.default_rng(0)
    F = (rng.random((21, 6)) < 0.35).astype(float)
    F[5] = 0  # an item without features
    topk = rng.integers(1, 21, size=(15, 5))
    topk[2, 3:] = 0  # padding is ignored
    topk[3] = [5, 0, 0, 0, 0]  # one item: nan
    got = intra_list_diversity(topk, F, per_user=True)
    want = np.array([brute_ild(l, F) for l in topk])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.isnan(got[3])
    assert abs(intra_list_diversity(topk, F) - np.nanmean(want)) < 1e-9


def test_ild_hand_cases():
    F = np.array([[0, 0], [1, 0], [1, 0], [0, 1]], dtype=float)
    assert intra_list_diversity(np.array([[1, 2]]), F) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[1, 3]]), F) == pytest.approx(1.0)


def test_novelty_by_hand():
    pop = np.array([0, 8, 2, 0])
    got = novelty(np.array([[1, 2], [3, 0]]), pop, n_users=8, per_user=True)
    np.testing.assert_allclose(got, [(0 + 2) / 2, 3.0])
    with pytest.raises(ValueError, match="2-D integer"):
        novelty(np.array([[1.5]]), pop, 8)


def test_history_similarity():
    F = np.array([[0, 0], [1, 0], [1, 0], [0, 1]], dtype=float)
    got = history_similarity(np.array([[2, 3], [3, 0], [1, 2]]), [np.array([1]), np.array([1, 3]), np.array([], int)], F,
                             per_user=True)
    np.testing.assert_allclose(got[:2], [0.5, 1 / np.sqrt(2)])
    assert np.isnan(got[2])


def test_beyond_accuracy_report():
    rows = [(u, i, t) for t, (u, i) in enumerate((u, i) for u in range(1, 9) for i in range(1, 6 + u % 3))]
    split = prep.leave_one_out(pd.DataFrame(rows, columns=["user", "item", "timestamp"]))
    F = np.eye(split.n_items + 1)
    out = beyond_accuracy(Popularity().fit(split), split, F, k=3)
    assert set(out) == {"ILD@3", "Novelty@3", "HistorySim@3", "Coverage@3", "AvgPop@3"}
    assert out["ILD@3"] == pytest.approx(1.0) and 0 < out["Coverage@3"] <= 1
