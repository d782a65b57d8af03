"""The one interface every recommender in the course implements.

* ``fit(split)`` learns from ``split.train`` (neural models may instead be trained
  by :mod:`course_lib.train`, which calls their ``loss(batch)``);
* ``score(users, histories)`` returns a ``(len(users), n_items + 1)`` array or tensor,
  higher is better, column 0 (padding) ignored. Models use whichever input they need:
  matrix factorization the user IDs, sequential models the time-ordered histories;
* ``recommend(users, histories, k)`` is the same for all: top-k with seen items removed.

So one evaluator (:func:`course_lib.metrics.evaluate`) and one plotting helper serve
every model.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch


def configure(config_cls, config=None, overrides: dict | None = None):
    """A copy of ``config`` (default: ``config_cls()``) with ``overrides`` applied.

    The caller's config object is never modified; an unknown field raises a TypeError that
    lists the valid ones.
    """
    cfg = dataclasses.replace(config) if config is not None else config_cls()
    names = [f.name for f in dataclasses.fields(cfg)]
    unknown = sorted(set(overrides or {}) - set(names))
    if unknown:
        raise TypeError(f"{type(cfg).__name__} has no field {unknown[0]!r}; fields: {names}")
    return dataclasses.replace(cfg, **(overrides or {}))


def recommend_topk(scores, histories: Sequence[np.ndarray], k: int = 10, exclude_seen: bool = True) -> np.ndarray:
    """Top-``k`` item IDs per row of ``scores``, never padding, never (if asked) a seen item."""
    s = torch.as_tensor(scores).detach().float().cpu().clone()
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items+1), got shape {tuple(s.shape)}")
    s[:, 0] = -torch.inf
    if exclude_seen:
        for r, h in enumerate(histories):
            if len(h):
                s[r, torch.from_numpy(np.array(h, dtype=np.int64))] = -torch.inf  # a copy: histories may be read-only
    k = min(k, s.shape[1] - 1)
    return torch.topk(s, k, dim=1).indices.numpy()


class Recommender:
    """Base class: subclasses set ``n_items`` and implement ``score``."""

    name: str = "recommender"
    n_items: int = 0

    def fit(self, split, **kwargs) -> "Recommender":  # pragma: no cover - overridden
        raise NotImplementedError(f"{type(self).__name__} does not implement fit()")

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]):  # pragma: no cover - overridden
        raise NotImplementedError(f"{type(self).__name__} does not implement score()")

    def recommend(self, users, histories, k: int = 10, exclude_seen: bool = True) -> np.ndarray:
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        return recommend_topk(self.score(users, histories), histories, k, exclude_seen)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_items={self.n_items})"
