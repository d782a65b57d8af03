"""The one interface every recommender in the course implements.

* ``fit(split)`` learns from ``split.train`` (neural models may instead be trained
  by :mod:`course_lib.train`, which calls their ``loss(batch)``);
* ``score(users, histories)`` returns a ``(len(users), n_items + 1)`` array or tensor,
  higher is better, column 0 (padding) ignored. Models use whichever input they need:
  matrix factorization the user IDs, sequential models the time-ordered histories;
* ``recommend(users, histories, k)`` is the same for all: top-k with seen items removed
  (``exclude_seen=True``, the default; the evaluator uses the same definition of "seen"),
  and ``-1`` (:data:`NO_ITEM`) filling the slots that no unseen item is left for.

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

    The caller's config object is never modified; a config of another class, or an unknown
    field, raises a TypeError that says what was expected. Every model of the course builds
    its config here: ``Model(config)``, ``Model(field=value)`` and both together work alike.
    """
    if config is not None and not isinstance(config, config_cls):
        raise TypeError(f"expected a {config_cls.__name__} (or keyword overrides of its fields), "
                        f"got {type(config).__name__}")
    cfg = dataclasses.replace(config) if config is not None else config_cls()
    names = [f.name for f in dataclasses.fields(cfg)]
    unknown = sorted(set(overrides or {}) - set(names))
    if unknown:
        raise TypeError(f"{type(cfg).__name__} has no field {unknown[0]!r}; fields: {names}")
    return dataclasses.replace(cfg, **(overrides or {}))


NO_ITEM = -1
"""The fill value of a top-k list that has fewer candidates than slots (never a valid item ID)."""


def topk_allowed(scores, excluded, k: int) -> np.ndarray:
    """Top-``k`` columns of ``scores`` among the columns not ``excluded``, best first.

    ``scores``: ``(B, n_items + 1)``; ``excluded``: ``(B, n_items + 1)`` bool (column 0,
    padding, is always excluded). Returns ``(B, min(k, n_items))`` int64; a row with fewer
    than that many allowed items ends with :data:`NO_ITEM` (-1) fills, so an excluded item
    is never returned, whatever the scores (-inf or NaN included). Tied scores are listed by
    item ID, smaller first, so the top ``k`` is always the start of the top ``k + 1``.
    """
    s = torch.as_tensor(scores).detach().float().cpu().clone()
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items+1), got shape {tuple(s.shape)}")
    ex = torch.as_tensor(excluded, dtype=torch.bool).cpu().clone()
    if ex.shape != s.shape:
        raise ValueError(f"excluded has shape {tuple(ex.shape)}, scores {tuple(s.shape)}")
    ex[:, 0] = True
    width = max(min(int(k), s.shape[1] - 1), 0)
    # allowed items first (by score, NaN counted as highest), excluded ones after all of them
    key = torch.where(ex, torch.tensor(-torch.inf), torch.nan_to_num(s, nan=torch.inf, posinf=torch.inf,
                                                                      neginf=torch.finfo(s.dtype).min))
    # a stable sort, not torch.topk: tied scores keep the order of their item IDs (smaller first), so the
    # same scores give the same list for every k and on every machine (topk's order of ties is undefined)
    top = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :width]
    n_allowed = (~ex).sum(1, keepdim=True)
    top = torch.where(torch.arange(width)[None, :] < n_allowed, top, torch.tensor(NO_ITEM))
    return top.numpy().astype(np.int64)


def seen_mask(histories: Sequence[np.ndarray], n_columns: int) -> torch.Tensor:
    """``(len(histories), n_columns)`` bool: True at every item of each history."""
    mask = torch.zeros(len(histories), n_columns, dtype=torch.bool)
    for r, h in enumerate(histories):
        if len(h):
            mask[r, torch.from_numpy(np.array(h, dtype=np.int64))] = True  # a copy: histories may be read-only
    return mask


def recommend_topk(scores, histories: Sequence[np.ndarray], k: int = 10, exclude_seen: bool = True) -> np.ndarray:
    """Top-``k`` item IDs per row of ``scores``: never padding, never (if ``exclude_seen``) a seen item.

    Returns an int64 array ``(len(histories), min(k, n_items))``, best first. When a row has
    fewer candidates than that (``k`` exceeds the items the user has not seen), its list
    ends with :data:`NO_ITEM` (-1) fills instead: drop them with ``row[row > 0]`` before
    decoding. :func:`course_lib.metrics.evaluate` ranks against the same candidates
    (``exclude_seen`` there means the same), so its HR@k is the HR@k of these lists.
    """
    s = torch.as_tensor(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (users x items+1), got shape {tuple(s.shape)}")
    if len(histories) != s.shape[0]:
        raise ValueError(f"got {s.shape[0]} rows of scores but {len(histories)} histories")
    if exclude_seen:
        excluded = seen_mask(histories, s.shape[1])
    else:
        excluded = torch.zeros(s.shape, dtype=torch.bool)
    return topk_allowed(s, excluded, k)


class Recommender:
    """Base class: subclasses set ``n_items`` and implement ``fit`` and ``score``.

    A model with hyper-parameters names their dataclass in ``config_class``; this constructor
    then builds ``self.config`` with :func:`configure`, so ``Model()``, ``Model(config)`` and
    ``Model(field=value)`` work the same for every model of the course.
    """

    name: str = "recommender"
    n_items: int = 0
    config_class = None

    def __init__(self, config=None, **overrides):
        if self.config_class is not None:
            self.config = configure(self.config_class, config, overrides)
        elif config is not None or overrides:
            raise TypeError(f"{type(self).__name__} has no configuration; got {config or overrides}")

    def fit(self, split, **kwargs) -> "Recommender":  # pragma: no cover - overridden
        raise NotImplementedError(f"{type(self).__name__} does not implement fit()")

    def score(self, users: np.ndarray, histories: Sequence[np.ndarray]):  # pragma: no cover - overridden
        raise NotImplementedError(f"{type(self).__name__} does not implement score()")

    def recommend(self, users, histories, k: int = 10, exclude_seen: bool = True) -> np.ndarray:
        """Top-``k`` item IDs per user, best first (see :func:`recommend_topk`: -1 fills when
        fewer than ``k`` items are left to recommend)."""
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        return recommend_topk(self.score(users, histories), histories, k, exclude_seen)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_items={self.n_items})"
