r"""BPR-MF: matrix factorization trained to **rank** (Rendle et al. 2009, "BPR: Bayesian
personalized ranking from implicit feedback").

Each observed pair :math:`(u, i)` gets one sampled negative :math:`j`, an item the user has
not interacted with, and the model learns to score :math:`i` above :math:`j`:

.. math::

   x_{ui} = p_u^\top q_i + b_i, \qquad
   L = -\frac{1}{|B|}\sum_{(u,i,j)\in B} \log \sigma(x_{ui} - x_{uj}) + \lambda\,(\lVert p_u\rVert^2 + \lVert q_i\rVert^2 + \lVert q_j\rVert^2)

(:func:`bpr_loss` is the first term). New users (ID 0) are **folded in**
(:meth:`BPRMF.fold_in`): the same loss, over every pair (clicked, not clicked), minimised
for the user vector alone with the item factors fixed.

The rating model is :mod:`course_lib.models.explicit_mf`, the closed-form implicit one
:mod:`course_lib.models.als`; what the three share is in :mod:`course_lib.models.factors`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..env import get_device
from ..prep import Split
from .base import Recommender
from .factors import UserFactors, check_fitted, check_history, long_tensor, score_rows

__all__ = ["bpr_loss", "BPRConfig", "BPRMF"]


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    r"""Mean BPR loss :math:`-\log\sigma(x_{ui} - x_{uj})`, computed stably as softplus(-(x_ui - x_uj))."""
    return torch.nn.functional.softplus(neg_scores - pos_scores).mean()


@dataclass
class BPRConfig:
    factors: int = 64
    lr: float = 0.01          # Adam
    reg: float = 1e-3         # lambda on p_u, q_i, q_j (per triple)
    epochs: int = 40
    batch_size: int = 4096
    init_std: float = 0.1
    item_bias: bool = True
    fold_steps: int = 100     # full-batch Adam steps of the fold-in of a new user
    fold_lr: float = 0.05
    seed: int = 42
    device: str = "auto"


class BPRMF(Recommender):
    r"""BPR-MF: :math:`x_{ui} = p_u^\top q_i + b_i`, trained to rank each observed item above a
    uniformly sampled unobserved one (resampled when the user has seen it).

    ``history_`` holds the per-epoch mean training loss. New users (ID 0) are folded in
    with :meth:`fold_in`.
    """

    name = "BPR-MF"

    config_class = BPRConfig

    def fit(self, split: Split, progress: bool = False,
            on_epoch: Callable[["BPRMF", int, float], None] | None = None, **kwargs) -> "BPRMF":
        """Train on ``split.train``'s (user, item) pairs; returns the model.

        ``on_epoch(model, epoch, loss)``, when given, is called after every epoch (``epoch``
        counts from 1, ``loss`` is that epoch's mean training loss): the place to evaluate
        the model on validation data while it trains, for instance.
        """
        cfg = self.config
        dev = get_device(cfg.device)
        self.n_users, self.n_items, self.device = split.n_users, split.n_items, dev
        pairs = split.train[["user", "item"]].drop_duplicates()
        if len(pairs) == 0:
            raise ValueError("split.train is empty: nothing to train on")
        g = torch.Generator().manual_seed(cfg.seed)
        u_all = torch.as_tensor(np.array(pairs["user"], dtype=np.int64))
        i_all = torch.as_tensor(np.array(pairs["item"], dtype=np.int64))
        n1 = split.n_items + 1
        seen_keys = torch.sort(u_all * n1 + i_all).values  # to reject negatives the user has seen
        k = cfg.factors
        self.P = (torch.randn(split.n_users + 1, k, generator=g) * cfg.init_std).to(dev).requires_grad_()
        self.Q = (torch.randn(n1, k, generator=g) * cfg.init_std).to(dev).requires_grad_()
        self.b = torch.zeros(n1, device=dev, requires_grad=cfg.item_bias)
        params = [self.P, self.Q] + ([self.b] if cfg.item_bias else [])
        opt = torch.optim.Adam(params, lr=cfg.lr)
        self.history_ = {"epoch": [], "loss": []}
        from tqdm.auto import tqdm

        bar = tqdm(range(cfg.epochs), desc="BPR-MF", unit="epoch", disable=not progress)
        for epoch in bar:
            order = torch.randperm(len(u_all), generator=g)
            neg = self._sample_negatives(u_all[order], seen_keys, n1, g)
            total = 0.0
            for s in range(0, len(order), cfg.batch_size):
                b = order[s:s + cfg.batch_size]
                ub, ib = u_all[b].to(dev), i_all[b].to(dev)
                jb = neg[s:s + cfg.batch_size].to(dev)
                pu, qi, qj = self.P[ub], self.Q[ib], self.Q[jb]
                x_ui = (pu * qi).sum(1) + self.b[ib]
                x_uj = (pu * qj).sum(1) + self.b[jb]
                loss = bpr_loss(x_ui, x_uj) + cfg.reg * ((pu ** 2).sum(1) + (qi ** 2).sum(1) + (qj ** 2).sum(1)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            self.history_["epoch"].append(epoch + 1)
            self.history_["loss"].append(total / len(order))
            if on_epoch is not None:
                on_epoch(self, epoch + 1, self.history_["loss"][-1])
            bar.set_postfix(loss=f"{self.history_['loss'][-1]:.4f}")
        for t in params:
            t.requires_grad_(False)
        return self

    @staticmethod
    def _sample_negatives(users: torch.Tensor, seen_keys: torch.Tensor, n1: int, g: torch.Generator) -> torch.Tensor:
        """One uniform negative per user in ``users`` among items 1..n; seen ones are redrawn
        (up to 50 rounds: only a user who has seen almost the whole catalog keeps a seen one)."""
        neg = torch.randint(1, n1, (len(users),), generator=g)
        for _ in range(50):
            keys = users * n1 + neg
            pos = torch.searchsorted(seen_keys, keys).clamp_max(len(seen_keys) - 1)
            bad = seen_keys[pos] == keys
            if not bad.any():
                break
            neg[bad] = torch.randint(1, n1, (int(bad.sum()),), generator=g)
        return neg

    @torch.no_grad()
    def score(self, users, histories):
        """:math:`x_{ui}` of every item, ``(len(users), n_items + 1)``; user 0 is folded in from the history."""
        check_fitted(self, "P")

        def known(us):
            return self.P[long_tensor(us, self.device)] @ self.Q.T + self.b[None, :]

        def new(h):
            return self.Q @ self.fold_in(h).vector + self.b

        return score_rows(users, histories, known, new)

    def fold_in(self, items, ratings=None) -> UserFactors:
        r"""A new user who interacted with ``items``: :class:`UserFactors` ``(0.0, p)``, item factors fixed.

        The BPR loss itself, over **every** pair (clicked :math:`i`, not clicked :math:`j`):
        :math:`\min_p \frac{1}{|P|}\sum_{(i, j)} \mathrm{softplus}(x_j - x_i) + \lambda \lVert p\rVert^2`,
        full batch, ``fold_steps`` Adam steps from :math:`p = 0` (deterministic).
        ``ratings`` (one per item) are **ignored**: BPR knows clicked and not clicked only,
        as in ``fit``. No item gives the zero vector (the item biases alone: popularity).
        There is no user bias (it would not change the user's ranking): 0.0.
        """
        check_fitted(self, "Q")
        cfg = self.config
        items, _ = check_history(items, ratings, self.n_items, 1.0)
        items = np.unique(items)
        p = torch.zeros(self.Q.shape[1], device=self.device)
        if len(items) == 0 or len(items) >= self.n_items:
            return UserFactors(0.0, p)
        neg = torch.ones(self.n_items + 1, dtype=torch.bool, device=self.device)
        neg[0] = False
        pos = torch.as_tensor(items, device=self.device)
        neg[pos] = False
        Qp, bp, Qn, bn = self.Q[pos], self.b[pos], self.Q[neg], self.b[neg]
        p.requires_grad_(True)
        opt = torch.optim.Adam([p], lr=cfg.fold_lr)
        with torch.enable_grad():
            for _ in range(cfg.fold_steps):
                x_pos, x_neg = Qp @ p + bp, Qn @ p + bn
                loss = torch.nn.functional.softplus(x_neg[None, :] - x_pos[:, None]).mean() + cfg.reg * (p ** 2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return UserFactors(0.0, p.detach())

    @property
    def item_factors(self) -> torch.Tensor:
        """The item vectors :math:`q_i`, ``(n_items + 1, factors)`` (row 0: padding)."""
        check_fitted(self, "Q")
        return self.Q.detach()
