r"""A first-order Markov chain over items: "what do people watch right after this one?"

The same idea as a bigram language model, with items for words. From every training
history we count the transitions :math:`C_{ij}` = how often item :math:`j` came
right after item :math:`i`, and estimate the next-item distribution with smoothing:

.. math::

   \hat P(j \mid i) = \frac{C_{ij} + \alpha\, \pi_j}{\sum_{j'} C_{ij'} + \alpha}

where :math:`\pi` is a prior over items: ``"uniform"`` (:math:`\pi_j = 1/n`, which is
add-:math:`\alpha` / Laplace smoothing: :math:`(C_{ij} + \alpha/n) / (C_i + \alpha)`)
or ``"popularity"`` (:math:`\pi_j` = the item's share of training interactions, a
Dirichlet prior: rare transitions fall back on what is popular, as a bigram model
backs off to unigrams). ``alpha = 0`` is the raw maximum-likelihood estimate.

The model has a **goldfish memory**: the score of a history depends on its last
item only. Everything before it is forgotten; the recurrent and attention models
of the next notebooks remember.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..seqdata import transitions
from .base import Recommender


@dataclass
class MarkovConfig:
    alpha: float = 1.0            # smoothing strength (pseudo-counts added to each row)
    prior: str = "popularity"     # "popularity" or "uniform"

    def __post_init__(self):
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.prior not in ("popularity", "uniform"):
            raise ValueError(f"prior must be 'popularity' or 'uniform', got {self.prior!r}")


def transition_counts(histories, n_items: int) -> sp.csr_matrix:
    """Sparse ``(n_items + 1, n_items + 1)`` matrix: entry ``[i, j]`` counts ``i`` followed by ``j``."""
    prev, nxt = transitions(histories)
    if len(prev) and (min(prev.min(), nxt.min()) < 1 or max(prev.max(), nxt.max()) > n_items):
        raise ValueError(f"item IDs must lie in 1..{n_items} (0 is padding); encode them with course_lib.prep first")
    counts = sp.csr_matrix((np.ones(len(prev), dtype=np.float64), (prev, nxt)), shape=(n_items + 1, n_items + 1))
    counts.sum_duplicates()
    return counts


def smoothed_probabilities(counts_rows: np.ndarray, alpha: float, prior: np.ndarray) -> np.ndarray:
    r"""Rows of :math:`(C_{ij} + \alpha \pi_j) / (\sum_j C_{ij} + \alpha)` for dense count rows ``(B, n + 1)``.

    ``prior`` has ``n + 1`` entries summing to 1 with ``prior[0] = 0``. A row without
    any count (and ``alpha = 0``) gives all zeros rather than dividing by zero.
    """
    counts_rows = np.asarray(counts_rows, dtype=np.float64)
    num = counts_rows + alpha * np.asarray(prior, dtype=np.float64)[None, :]
    den = counts_rows.sum(1, keepdims=True) + alpha
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


class MarkovChain(Recommender):
    """First-order Markov chain recommender: ``fit`` counts, ``score`` reads one smoothed row."""

    name = "Markov"

    config_class = MarkovConfig

    def fit(self, split, **kwargs) -> "MarkovChain":
        """Count the transitions inside each user's training history (``split.training_histories()``)."""
        self.n_items = split.n_items
        self.counts_ = transition_counts(split.training_histories(), self.n_items)
        if self.config.prior == "uniform":
            prior = np.ones(self.n_items + 1)
        else:
            prior = split.item_popularity().astype(np.float64) + 1e-9  # never exactly 0: every item stays rankable
        prior[0] = 0.0
        self.prior_ = prior / prior.sum()
        return self

    def next_item_probabilities(self, items) -> np.ndarray:
        r"""``(len(items), n_items + 1)``: :math:`\hat P(\cdot \mid i)` for each item ``i`` (0: no history -> the prior)."""
        if not hasattr(self, "counts_"):
            raise RuntimeError("call fit(split) before scoring")
        items = np.atleast_1d(np.asarray(items, dtype=np.int64))
        if ((items < 0) | (items > self.n_items)).any():
            raise ValueError(f"item IDs must lie in 0..{self.n_items}")
        return smoothed_probabilities(self.counts_[items].toarray(), self.config.alpha, self.prior_)

    def score(self, users, histories) -> np.ndarray:
        """Next-item probabilities given the **last** item of each history (the rest is ignored)."""
        last = np.array([h[-1] if len(h) else 0 for h in histories], dtype=np.int64)
        return self.next_item_probabilities(last).astype(np.float32)

    def __repr__(self) -> str:
        return f"MarkovChain(n_items={self.n_items}, alpha={self.config.alpha}, prior={self.config.prior!r})"


__all__ = ["MarkovConfig", "MarkovChain", "transition_counts", "smoothed_probabilities"]
