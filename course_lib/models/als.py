r"""Implicit ALS: weighted least squares on the **whole** 0/1 matrix (Hu, Koren & Volinsky 2008,
"Collaborative filtering for implicit feedback datasets"), solved in closed form, one side at a time.

Every cell counts: an observed pair with confidence :math:`c_{ui} = 1 + \alpha r_{ui}`, an
unobserved one as a 0 with confidence 1. With the item factors :math:`Y` fixed, user
:math:`u`'s best vector is

.. math::

   x_u = \bigl(Y^\top Y + \alpha\, Y_u^\top Y_u + \lambda I\bigr)^{-1} (1 + \alpha)\, Y_u^\top \mathbf 1

where :math:`Y_u` holds the factors of the items user :math:`u` interacted with (and the
same for the items, users fixed). Summed over all users this is :func:`als_half_step`,
fully vectorised: the :math:`\sum_{i \in u} y_i y_i^\top` terms of every user come from one
sparse product of the 0/1 matrix with the items' flattened outer products.

New users (ID 0) are **folded in** (:meth:`ALS.fold_in`) by that same user step, exactly
(:func:`als_fold_in`).

The rating model is :mod:`course_lib.models.explicit_mf`, the sampled ranking one
:mod:`course_lib.models.bpr`; what the three share is in :mod:`course_lib.models.factors`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..env import get_device
from ..prep import Split, interaction_matrix
from .base import Recommender
from .factors import UserFactors, check_fitted, check_history, check_items, long_tensor, score_rows

__all__ = ["check_confidence_weights", "als_half_step", "als_fold_in", "ALSConfig", "ALS"]


def _nonzero_entries(R):
    """The stored entries of ``R`` (scipy sparse, or dense: its nonzero cells) as NumPy arrays:
    ``(rows int64, cols int64, values float32, shape)``."""
    if sp.issparse(R):
        R = R.tocoo()
        return R.row.astype(np.int64), R.col.astype(np.int64), R.data.astype(np.float32), R.shape
    R = np.asarray(R)
    rows, cols = np.nonzero(R)
    return rows.astype(np.int64), cols.astype(np.int64), R[rows, cols].astype(np.float32), R.shape


def check_confidence_weights(values) -> None:
    """Implicit ALS weights must be finite and >= 0 (the confidence is ``1 + alpha * r``).

    A negative entry would lower an item's confidence below that of an unobserved one and can
    make the system indefinite; raise a ValueError that says what was given instead.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    bad = ~np.isfinite(v) | (v < 0)
    if bad.any():
        shown = ", ".join(f"{x:g}" for x in v[bad][:3])
        raise ValueError(
            f"implicit ALS expects interaction weights r >= 0 (confidence 1 + alpha * r), finite; "
            f"got {int(bad.sum())} that are not ({shown}{', ...' if bad.sum() > 3 else ''}). "
            "Pass 0/1 interactions or non-negative counts: drop dislikes (or set them to 0), never a negative value.")


def als_half_step(R, Y, alpha: float, reg: float):
    r"""One ALS half-step: the best vector of **every** row of ``R`` given the column factors ``Y``.

    ``R``: ``(n_rows, n_cols)`` 0/1 matrix (scipy sparse or dense; a nonzero is an interaction,
    its value scales the confidence, so every value must be finite and >= 0: a ValueError
    says otherwise); ``Y``: ``(n_cols, k)``. For each row :math:`u`

    .. math:: x_u = \bigl(Y^\top Y + \alpha \sum_{i\in u} r_{ui}\, y_i y_i^\top + \lambda I\bigr)^{-1}
                    \sum_{i \in u} (1 + \alpha r_{ui})\, y_i

    Vectorised: :math:`\sum_i r_{ui} y_i y_i^\top` for all rows at once is ``R @ Z`` with
    ``Z[i] = vec(y_i y_i^T)``, then one batched solve. Returns a tensor ``(n_rows, k)``
    (a numpy array when ``Y`` is one). Rows without interactions get the zero vector.
    """
    as_numpy = isinstance(Y, np.ndarray)
    Yt = torch.as_tensor(Y)
    dtype = Yt.dtype if Yt.is_floating_point() else torch.float32
    Yt = Yt.to(dtype)
    dev = Yt.device
    rows, cols, vals, shape = _nonzero_entries(R)
    check_confidence_weights(vals)
    if shape[1] != Yt.shape[0]:
        raise ValueError(f"R has {shape[1]} columns but Y has {Yt.shape[0]} rows; they must match")
    k = Yt.shape[1]
    if reg <= 0 or alpha < 0:
        raise ValueError(f"ALS needs reg > 0 and alpha >= 0, got reg={reg}, alpha={alpha}")
    idx = torch.as_tensor(np.stack([rows, cols]))
    Rt = torch.sparse_coo_tensor(idx, torch.as_tensor(vals, dtype=dtype), size=shape,
                                 check_invariants=False).coalesce().to(dev)
    Z = (Yt[:, :, None] * Yt[:, None, :]).reshape(shape[1], k * k)       # vec(y_i y_i^T)
    A = (alpha * torch.sparse.mm(Rt, Z)).reshape(shape[0], k, k)          # alpha * sum_i r_ui y_i y_i^T
    A = A + (Yt.T @ Yt + reg * torch.eye(k, dtype=dtype, device=dev))[None]
    C = torch.sparse_coo_tensor(Rt.indices(), 1 + alpha * Rt.values(), size=shape, check_invariants=False)
    b = torch.sparse.mm(C, Yt)                                            # sum_i (1 + alpha r_ui) y_i
    X = torch.cholesky_solve(b[:, :, None], torch.linalg.cholesky(A))[:, :, 0]  # A is symmetric positive definite
    return X.cpu().numpy() if as_numpy else X


def als_fold_in(item_factors, items, alpha: float, reg: float) -> torch.Tensor:
    r"""The ALS user step for one new user: the best user vector given fixed item factors.

    .. math:: x = (Y^\top Y + \alpha Y_H^\top Y_H + \lambda I)^{-1} (1 + \alpha) Y_H^\top \mathbf 1

    ``item_factors``: ``(n_items + 1, k)`` tensor (row 0, padding, is ignored); ``items``:
    the item IDs the user interacted with (each counts once). Returns the user vector, a
    tensor ``(k,)``; an empty history gives the zero vector.
    """
    Y = torch.as_tensor(item_factors)
    k = Y.shape[1]
    items = check_items(items, Y.shape[0] - 1)
    if len(items) == 0:
        return torch.zeros(k, dtype=Y.dtype, device=Y.device)
    Yb = Y[1:]
    YH = Y[torch.as_tensor(np.unique(items), device=Y.device)]
    A = Yb.T @ Yb + alpha * YH.T @ YH + reg * torch.eye(k, dtype=Y.dtype, device=Y.device)
    b = (1 + alpha) * YH.sum(0)
    return torch.linalg.solve(A, b)


@dataclass
class ALSConfig:
    factors: int = 32
    alpha: float = 0.5        # confidence of an observed pair: c = 1 + alpha
    reg: float = 1.0          # lambda
    iterations: int = 10
    init_std: float = 0.01
    seed: int = 42
    device: str = "auto"


class ALS(Recommender):
    r"""Implicit ALS (Hu, Koren & Volinsky 2008): alternate :func:`als_half_step` for users and items.

    Loss on the whole 0/1 matrix :math:`P`:
    :math:`\sum_{u,i} c_{ui}(p_{ui} - x_u^\top y_i)^2 + \lambda(\sum_u \lVert x_u\rVert^2 + \sum_i \lVert y_i\rVert^2)`.
    Each half-step solves it exactly for one side, so the loss never goes up
    (``history_["loss"]``). New users (ID 0) are folded in with the same user step.
    """

    name = "ALS"

    config_class = ALSConfig

    def fit(self, split: Split, progress: bool = False, track_loss: bool = False, **kwargs) -> "ALS":
        """Alternate the user and item steps on ``split.train`` as 0/1 interactions; returns the model.

        ``track_loss``: compute the full loss after every iteration (``history_["loss"]``, NaN otherwise).
        """
        cfg = self.config
        dev = get_device(cfg.device)
        self.n_users, self.n_items, self.device = split.n_users, split.n_items, dev
        if len(split.train) == 0:
            raise ValueError("split.train is empty: nothing to train on")
        R = interaction_matrix(split.train, split.n_users, split.n_items, implicit=True)
        RT = R.T.tocsr()
        g = torch.Generator().manual_seed(cfg.seed)
        self.X = (torch.randn(split.n_users + 1, cfg.factors, generator=g) * cfg.init_std).to(dev)
        self.Y = (torch.randn(split.n_items + 1, cfg.factors, generator=g) * cfg.init_std).to(dev)
        self.Y[0] = 0.0
        self.history_ = {"iteration": [], "loss": []}
        from tqdm.auto import tqdm

        for it in tqdm(range(cfg.iterations), desc="ALS", unit="iter", disable=not progress):
            self.X = als_half_step(R, self.Y, cfg.alpha, cfg.reg)
            self.Y = als_half_step(RT, self.X, cfg.alpha, cfg.reg)
            self.history_["iteration"].append(it + 1)
            self.history_["loss"].append(self.loss(R) if track_loss else float("nan"))
        return self

    @torch.no_grad()
    def loss(self, R) -> float:
        r"""The full weighted loss over every (user, item) cell, padding excluded."""
        cfg = self.config
        X, Y = self.X[1:].double(), self.Y[1:].double()
        coo = sp.coo_matrix(R)
        # sum over all cells of x^2 (p=0, c=1), then correct the observed cells
        pred_sq = float(((X.T @ X) * (Y.T @ Y)).sum())
        u = torch.as_tensor(coo.row.astype(np.int64)) - 1
        i = torch.as_tensor(coo.col.astype(np.int64)) - 1
        x = (X[u.to(self.device)] * Y[i.to(self.device)]).sum(1)
        c = 1 + cfg.alpha
        observed = float((c * (1 - x) ** 2 - x ** 2).sum())
        return pred_sq + observed + cfg.reg * float((X ** 2).sum() + (Y ** 2).sum())

    def fold_in(self, items, ratings=None) -> UserFactors:
        """A new user who interacted with ``items``: :class:`UserFactors` ``(0.0, x)``, by :func:`als_fold_in`.

        ``ratings`` (one per item) are **ignored**, as in ``fit``, which trains on 0/1
        interactions: each item counts once, with confidence ``1 + alpha``. There is no
        user bias (it would not change the user's ranking): 0.0.
        """
        check_fitted(self, "Y")
        items, _ = check_history(items, ratings, self.n_items, 1.0)
        return UserFactors(0.0, als_fold_in(self.Y, items, self.config.alpha, self.config.reg))

    @torch.no_grad()
    def score(self, users, histories):
        r""":math:`x_u^\top y_i` of every item, ``(len(users), n_items + 1)``; user 0 is folded in from the history."""
        check_fitted(self, "X")

        def known(us):
            return self.X[long_tensor(us, self.device)] @ self.Y.T

        def new(h):
            return self.Y @ self.fold_in(h).vector

        return score_rows(users, histories, known, new)

    @property
    def item_factors(self) -> torch.Tensor:
        """The item vectors :math:`y_i`, ``(n_items + 1, factors)`` (row 0: padding, zeros)."""
        check_fitted(self, "Y")
        return self.Y
