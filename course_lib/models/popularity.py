"""The popularity baseline: recommend what most people interacted with.

Every learned model in the course must beat it; surprisingly often, at first, none does.
"""
from __future__ import annotations

import numpy as np

from .base import Recommender


class Popularity(Recommender):
    name = "Popularity"

    def fit(self, split, **kwargs) -> "Popularity":
        self.n_items = split.n_items
        counts = split.item_popularity().astype(np.float32)
        counts[0] = -np.inf
        self.counts_ = counts
        return self

    def score(self, users, histories):
        if not hasattr(self, "counts_"):
            raise RuntimeError("call fit(split) before score()")
        return np.broadcast_to(self.counts_, (len(users), self.n_items + 1)).copy()
