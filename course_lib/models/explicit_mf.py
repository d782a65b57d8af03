r"""Explicit matrix factorization: predict **ratings** from a user vector and an item vector.

Every user and every item becomes a vector of ``factors`` numbers; with biases
(Koren, Bell & Volinsky 2009, "Matrix factorization techniques"):

.. math::

   \hat r_{ui} = \mu + b_u + b_i + p_u^\top q_i, \qquad
   L = \frac{1}{|B|}\sum_{(u,i)\in B} (\hat r_{ui} - r_{ui})^2
       + \lambda\,(\lVert p_u\rVert^2 + \lVert q_i\rVert^2) + \lambda_b\,(b_u^2 + b_i^2)

trained by minibatch Adam, with a learning rate that decays every epoch. Rate it with
RMSE on a random split of the ratings (:func:`course_lib.prep.random_split`).

New users (ID 0) are **folded in** (:meth:`ExplicitMF.fold_in`): :math:`b_u` and :math:`p_u`
by ridge regression to the residuals :math:`r - \mu - b_i` of the given ratings, the item
factors fixed (a clicked item without a rating counts as ``assumed_rating``).

The ranking models on 0/1 interactions are :mod:`course_lib.models.bpr` and
:mod:`course_lib.models.als`; what the three share is in :mod:`course_lib.models.factors`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..env import get_device
from ..prep import Split
from .base import Recommender
from .factors import UserFactors, check_fitted, check_history, long_tensor, score_rows

__all__ = ["ExplicitMFConfig", "ExplicitMF"]


@dataclass
class ExplicitMFConfig:
    factors: int = 64
    reg: float = 0.1          # lambda on p_u, q_i (per rating in the batch)
    bias_reg: float = 0.01    # lambda_b on b_u, b_i
    lr: float = 0.02          # Adam
    lr_decay: float = 0.9     # the learning rate is multiplied by this after every epoch
    epochs: int = 25
    batch_size: int = 4096
    init_std: float = 0.05
    assumed_rating: float = 5.0  # rating given to a clicked item when folding in a new user
    seed: int = 42
    device: str = "auto"


class ExplicitMF(Recommender):
    r"""Biased matrix factorization for ratings: :math:`\hat r_{ui} = \mu + b_u + b_i + p_u^\top q_i`.

    ``fit(split)`` trains on ``split.train``'s ratings (and tracks ``split.valid``'s RMSE when
    it has rows); ``predict(users, items)`` gives ratings clipped to the training range;
    ``score`` ranks every item by predicted rating (a rating model, not a ranking one:
    it happily recommends obscure movies with a few perfect ratings).
    ``history_`` holds the per-epoch ``train_rmse`` and ``valid_rmse``.
    """

    name = "ExplicitMF"

    config_class = ExplicitMFConfig

    # -- training ---------------------------------------------------------------
    def fit(self, split: Split, progress: bool = False, **kwargs) -> "ExplicitMF":
        valid = split.valid if len(split.valid) and "rating" in split.valid.columns else None
        return self.fit_ratings(split.train, split.n_users, split.n_items, valid=valid, progress=progress)

    def fit_ratings(self, ratings: pd.DataFrame, n_users: int, n_items: int,
                    valid: pd.DataFrame | None = None, progress: bool = False) -> "ExplicitMF":
        """Train on an encoded frame with ``user``, ``item``, ``rating`` columns; returns the model."""
        for col in ("user", "item", "rating"):
            if col not in ratings.columns:
                raise ValueError(f"ratings frame lacks column {col!r}; ExplicitMF needs user, item, rating")
        if len(ratings) == 0:
            raise ValueError("no ratings to train on")
        cfg = self.config
        dev = get_device(cfg.device)
        self.n_users, self.n_items, self.device = n_users, n_items, dev
        g = torch.Generator().manual_seed(cfg.seed)
        u = long_tensor(ratings["user"], dev)
        i = long_tensor(ratings["item"], dev)
        r = torch.as_tensor(np.array(ratings["rating"], dtype=np.float32), device=dev)
        self.mu_ = float(r.mean())
        self.r_min_, self.r_max_ = float(r.min()), float(r.max())
        k = cfg.factors
        self.P = (torch.randn(n_users + 1, k, generator=g) * cfg.init_std).to(dev).requires_grad_()
        self.Q = (torch.randn(n_items + 1, k, generator=g) * cfg.init_std).to(dev).requires_grad_()
        self.bu = torch.zeros(n_users + 1, device=dev, requires_grad=True)
        self.bi = torch.zeros(n_items + 1, device=dev, requires_grad=True)
        opt = torch.optim.Adam([self.P, self.Q, self.bu, self.bi], lr=cfg.lr)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
        self.history_ = {"epoch": [], "train_rmse": [], "valid_rmse": []}
        from tqdm.auto import tqdm

        bar = tqdm(range(cfg.epochs), desc="ExplicitMF", unit="epoch", disable=not progress)
        for epoch in bar:
            order = torch.randperm(len(r), generator=g).to(dev)
            for s in range(0, len(r), cfg.batch_size):
                b = order[s:s + cfg.batch_size]
                ub, ib = u[b], i[b]
                pu, qi = self.P[ub], self.Q[ib]
                pred = self.mu_ + self.bu[ub] + self.bi[ib] + (pu * qi).sum(1)
                loss = ((pred - r[b]) ** 2).mean() \
                    + cfg.reg * ((pu ** 2).sum(1) + (qi ** 2).sum(1)).mean() \
                    + cfg.bias_reg * (self.bu[ub] ** 2 + self.bi[ib] ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            self.history_["epoch"].append(epoch + 1)
            self.history_["train_rmse"].append(self.rmse(ratings))
            self.history_["valid_rmse"].append(self.rmse(valid) if valid is not None and len(valid) else float("nan"))
            bar.set_postfix(train=f"{self.history_['train_rmse'][-1]:.4f}", valid=f"{self.history_['valid_rmse'][-1]:.4f}")
        for t in (self.P, self.Q, self.bu, self.bi):
            t.requires_grad_(False)
        return self

    # -- prediction -------------------------------------------------------------
    @torch.no_grad()
    def predict(self, users, items, clip: bool = True) -> np.ndarray:
        """Predicted ratings for the pairs ``(users[n], items[n])``, clipped to the training range."""
        check_fitted(self, "P")
        u = long_tensor(np.atleast_1d(users), self.device)
        i = long_tensor(np.atleast_1d(items), self.device)
        if len(u) != len(i):
            raise ValueError(f"users and items must have the same length, got {len(u)} and {len(i)}")
        if len(u) and (u.max() > self.n_users or i.max() > self.n_items or u.min() < 0 or i.min() < 0):
            raise ValueError(f"encoded IDs expected: users in 1..{self.n_users}, items in 1..{self.n_items}")
        pred = self.mu_ + self.bu[u] + self.bi[i] + (self.P[u] * self.Q[i]).sum(1)
        if clip:
            pred = pred.clamp(self.r_min_, self.r_max_)
        return pred.float().cpu().numpy()

    def rmse(self, ratings: pd.DataFrame) -> float:
        """Root mean squared error of the (clipped) predictions on a frame of ratings."""
        pred = self.predict(ratings["user"].to_numpy(), ratings["item"].to_numpy())
        return float(np.sqrt(np.mean((pred - ratings["rating"].to_numpy(np.float64)) ** 2)))

    @torch.no_grad()
    def fold_in(self, items, ratings=None) -> UserFactors:
        r"""A new user who rated ``items`` with ``ratings``: :class:`UserFactors` ``(b_u, p_u)``.

        Ridge regression of the residuals :math:`r - \mu - b_i` on :math:`[1, q_i]` over the
        given items, item factors and biases fixed. ``ratings`` default to ``assumed_rating``
        (a click taken as that many stars). No item: ``(0.0, zero vector)``, the biases alone.
        """
        check_fitted(self, "P")
        items, r = check_history(items, ratings, self.n_items, self.config.assumed_rating)
        k = self.config.factors
        if len(items) == 0:
            return UserFactors(0.0, torch.zeros(k, device=self.device))
        idx = torch.as_tensor(items, device=self.device)
        resid = torch.as_tensor(r, device=self.device) - self.mu_ - self.bi[idx]
        Z = torch.cat([torch.ones(len(items), 1, device=self.device), self.Q[idx]], dim=1)
        lam = torch.diag(torch.tensor([self.config.bias_reg] + [self.config.reg] * k, device=self.device))
        w = torch.linalg.solve(Z.T @ Z + len(items) * lam, Z.T @ resid)
        return UserFactors(float(w[0]), w[1:])

    @torch.no_grad()
    def score(self, users, histories):
        """Predicted ratings (not clipped) of every item, ``(len(users), n_items + 1)``; user 0 is folded in."""
        check_fitted(self, "P")

        def known(us):
            u = long_tensor(us, self.device)
            return self.mu_ + self.bu[u][:, None] + self.bi[None, :] + self.P[u] @ self.Q.T

        def new(h):
            b, p = self.fold_in(h)
            return self.mu_ + b + self.bi + self.Q @ p

        return score_rows(users, histories, known, new)
