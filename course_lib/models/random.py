"""Chance, and a candidate pool: two baselines a cold-start evaluation needs.

* :class:`RandomScores`: every item gets a random score (fixed per user and seed): the
  "at chance" row of a table, so that 0.03 reads as chance and not as failure.
* :class:`Restricted`: wraps any model so that only ``allowed`` items can be ranked (the
  others score ``-inf``): e.g. "which of this week's new movies will the user pick?",
  where the candidates are the cold items only.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Recommender, seen_mask, topk_allowed


class RandomScores(Recommender):
    name = "Random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, split, **kwargs) -> "RandomScores":
        self.n_items = split.n_items
        return self

    def score(self, users, histories):
        out = np.empty((len(users), self.n_items + 1), dtype=np.float32)
        for r, u in enumerate(np.asarray(users, dtype=np.int64)):
            out[r] = np.random.default_rng([self.seed, int(u)]).random(self.n_items + 1)
        out[:, 0] = -np.inf
        return out


class Restricted(Recommender):
    """``model``'s scores on the ``allowed`` items; every other item scores ``-inf``."""

    def __init__(self, model: Recommender, allowed):
        self.model = model
        self.allowed = np.unique(np.asarray(allowed, dtype=np.int64))
        if len(self.allowed) == 0 or self.allowed.min() < 1:
            raise ValueError("allowed must be a non-empty set of item IDs >= 1 (0 is padding)")
        self.name = f"{getattr(model, 'name', type(model).__name__)} (restricted)"

    @property
    def n_items(self):
        return self.model.n_items

    def fit(self, split, **kwargs) -> "Restricted":
        self.model.fit(split, **kwargs)
        return self

    def score(self, users, histories):
        s = torch.as_tensor(np.asarray(torch.as_tensor(self.model.score(users, histories)).float().cpu()))
        out = torch.full_like(s, -torch.inf)
        idx = torch.from_numpy(self.allowed)
        out[:, idx] = s[:, idx]
        return out.numpy()

    def recommend(self, users, histories, k: int = 10, exclude_seen: bool = True) -> np.ndarray:
        """Top-k among the allowed items only (fewer than k: ``-1`` fills, as everywhere)."""
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        s = self.score(users, histories)
        excluded = torch.ones(s.shape, dtype=torch.bool)
        excluded[:, torch.from_numpy(self.allowed)] = False
        if exclude_seen:
            excluded |= seen_mask(histories, s.shape[1])
        return topk_allowed(s, excluded, k)

    def __repr__(self) -> str:
        return f"Restricted({self.model!r}, {len(self.allowed)} items)"
