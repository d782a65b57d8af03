"""What the three matrix-factorization models share (:mod:`~course_lib.models.explicit_mf`,
:mod:`~course_lib.models.bpr`, :mod:`~course_lib.models.als`).

* :class:`UserFactors`: what every ``fold_in(items, ratings=None)`` returns for a new user,
  a bias and a vector, whatever objective the model fitted them with;
* :func:`score_rows`: a ``score`` built from two parts, the rows of known users and the
  fold-in of each row whose user is 0 (a new user, known only by a history);
* the checks of the inputs (:func:`check_fitted`, :func:`check_items`, :func:`check_history`)
  and :func:`long_tensor`, IDs as an int64 tensor.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["UserFactors", "score_rows", "check_fitted", "check_items", "check_history", "long_tensor"]


class UserFactors(NamedTuple):
    """A folded-in user: ``bias`` (a float) and ``vector`` (a tensor of the model's ``factors``).

    Only ExplicitMF has a user bias; BPR-MF and ALS return 0.0 (a constant per user
    does not change that user's ranking). Unpacks as ``bias, vector = model.fold_in(items)``.
    """

    bias: float
    vector: torch.Tensor


def long_tensor(ids, device) -> torch.Tensor:
    """``ids`` (any sequence of integers) as an int64 tensor on ``device``."""
    return torch.as_tensor(np.array(ids, dtype=np.int64), device=device)


def check_fitted(model, attr: str) -> None:
    """Raise a RuntimeError that says to call ``fit`` when ``model`` lacks the trained ``attr``."""
    if not hasattr(model, attr):
        raise RuntimeError(f"{type(model).__name__} is not trained yet: call fit(split) first")


def check_items(items, n_items: int) -> np.ndarray:
    """``items`` as a flat int64 array without padding (0); a ValueError when one is outside 0..n_items."""
    items = np.asarray(items, dtype=np.int64).ravel()
    if len(items) and (items.min() < 0 or items.max() > n_items):
        raise ValueError(f"item IDs must lie in 1..{n_items} (encoded IDs, 0 = padding); got {items.min()}..{items.max()}")
    return items[items > 0]


def check_history(items, ratings, n_items: int, default_rating: float) -> tuple[np.ndarray, np.ndarray]:
    """A new user's history for ``fold_in``: ``(items, ratings)``, padding dropped from both.

    ``ratings`` gives one value per item; ``None`` gives every item ``default_rating``.
    Returns an int64 and a float32 array of the same length; a ValueError when the lengths
    of ``items`` and ``ratings`` differ or an item ID is out of range.
    """
    raw = np.asarray(items, dtype=np.int64).ravel()
    r = np.full(len(raw), default_rating, np.float32) if ratings is None else np.asarray(ratings, np.float32).ravel()
    if len(r) != len(raw):
        raise ValueError(f"got {len(raw)} items but {len(r)} ratings; pass one rating per item (or none)")
    return check_items(raw, n_items), r[raw > 0]


def score_rows(users, histories, known_rows, fold_one):
    """The rows of ``score``: ``known_rows(users)`` for all, then row ``r`` replaced by
    ``fold_one(histories[r])`` wherever ``users[r]`` is 0 (a new user).

    ``known_rows`` maps an int64 array of user IDs to a ``(len(users), n_items + 1)`` tensor;
    ``fold_one`` maps one history to a row. Returns that tensor; a ValueError when there is
    not one history per user.
    """
    users = np.atleast_1d(np.asarray(users, dtype=np.int64))
    if len(histories) != len(users):
        raise ValueError(f"got {len(users)} users but {len(histories)} histories; pass one history per user "
                         "(an empty array when unknown)")
    out = known_rows(users)
    for r in np.flatnonzero(users == 0):
        out[r] = fold_one(histories[r])
    return out
