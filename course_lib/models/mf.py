r"""Matrix factorization: every user and every item becomes a vector of ``factors`` numbers.

Three models, one idea (a user's taste is a direction in a shared space, an item's
score is how far it points that way):

* :class:`ExplicitMF`: predict **ratings** with biases, trained by minibatch Adam (with a
  learning rate that decays every epoch) on the squared error (Koren, Bell & Volinsky 2009, "Matrix factorization techniques")

  .. math::

     \hat r_{ui} = \mu + b_u + b_i + p_u^\top q_i, \qquad
     L = \frac{1}{|B|}\sum_{(u,i)\in B} (\hat r_{ui} - r_{ui})^2
         + \lambda\,(\lVert p_u\rVert^2 + \lVert q_i\rVert^2) + \lambda_b\,(b_u^2 + b_i^2)

* :class:`BPRMF`: **rank** observed items above unobserved ones (Rendle et al. 2009,
  "BPR: Bayesian personalized ranking from implicit feedback"), one sampled negative
  :math:`j` per observed pair :math:`(u, i)`

  .. math::

     x_{ui} = p_u^\top q_i + b_i, \qquad
     L = -\frac{1}{|B|}\sum_{(u,i,j)\in B} \log \sigma(x_{ui} - x_{uj}) + \lambda\,(\lVert p_u\rVert^2 + \lVert q_i\rVert^2 + \lVert q_j\rVert^2)

* :class:`ALS`: weighted least squares on the **whole** 0/1 matrix with confidences
  :math:`c_{ui} = 1 + \alpha r_{ui}` (Hu, Koren & Volinsky 2008, "Collaborative filtering
  for implicit feedback datasets"), solved in closed form, one side at a time

  .. math::

     x_u = \bigl(Y^\top Y + \alpha\, Y_u^\top Y_u + \lambda I\bigr)^{-1} (1 + \alpha)\, Y_u^\top \mathbf 1

  where :math:`Y_u` holds the factors of the items user :math:`u` interacted with.
  Summed over all users this is :func:`als_half_step`, fully vectorised: the
  :math:`\sum_{i \in u} y_i y_i^\top` terms of every user come from one sparse product
  of the 0/1 matrix with the items' flattened outer products.

New users. All three score a user given only a history (user ID 0, the padding ID, or
any row of ``score`` whose user is 0): they **fold in** a user vector with the item
factors fixed, each by its own objective. ALS solves its user step above
(:func:`fold_in`, exact); BPR-MF minimises the BPR loss over the pairs (clicked,
not clicked) for the user vector alone (:meth:`BPRMF.fold_in`); ExplicitMF fits
:math:`b_u` and :math:`p_u` by ridge regression to the residuals
:math:`r - \mu - b_i` of the given ratings (clicked items count as ``assumed_rating``).

Also here: :func:`random_split` (a random train/validation/test split of the ratings,
for RMSE) and :func:`most_similar` / :func:`nearest_items` (nearest items in a factor space).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..env import get_device
from ..prep import Split, encode_ids, interaction_matrix
from .base import Recommender, configure

__all__ = [
    "random_split", "ExplicitMFConfig", "ExplicitMF", "BPRConfig", "BPRMF", "bpr_loss",
    "ALSConfig", "ALS", "als_half_step", "fold_in", "most_similar", "nearest_items",
]


# ----------------------------------------------------------------------------- helpers


def random_split(df: pd.DataFrame, test_frac: float = 0.2, valid_frac: float = 0.0, seed: int = 0) -> Split:
    """Random split of the **ratings** (not by time): the classic rating-prediction protocol.

    ``test_frac`` of all rows go to test; ``valid_frac`` of the remaining training rows go
    to validation (for tuning). IDs are encoded over the whole frame (1-based, 0 = padding),
    so a test user or item may have few or no training ratings: the model then falls back
    on the biases. Returns a :class:`course_lib.prep.Split` with ``kind="random"``.
    """
    if "rating" not in df.columns:
        raise ValueError("random_split needs a 'rating' column (it is the rating-prediction split)")
    if not (0 < test_frac < 1 and 0 <= valid_frac < 1):
        raise ValueError("test_frac must be in (0, 1) and valid_frac in [0, 1)")
    enc, umap, imap = encode_ids(df)
    perm = np.random.default_rng(seed).permutation(len(enc))
    n_test = int(round(test_frac * len(enc)))
    n_valid = int(round(valid_frac * (len(enc) - n_test)))
    test = enc.iloc[np.sort(perm[:n_test])].reset_index(drop=True)
    valid = enc.iloc[np.sort(perm[n_test:n_test + n_valid])].reset_index(drop=True)
    train = enc.iloc[np.sort(perm[n_test + n_valid:])].reset_index(drop=True)
    return Split(train, valid, test, len(umap), len(imap), umap, imap, kind="random")


def _device(prefer):
    return get_device(prefer)


def _long(x, device) -> torch.Tensor:
    return torch.as_tensor(np.array(x, dtype=np.int64), device=device)


def _check_fitted(model, attr: str) -> None:
    if not hasattr(model, attr):
        raise RuntimeError(f"{type(model).__name__} is not trained yet: call fit(split) first")


def _check_items(items: np.ndarray, n_items: int) -> np.ndarray:
    items = np.asarray(items, dtype=np.int64).ravel()
    if len(items) and (items.min() < 0 or items.max() > n_items):
        raise ValueError(f"item IDs must lie in 1..{n_items} (encoded IDs, 0 = padding); got {items.min()}..{items.max()}")
    return items[items > 0]


def _score_rows(users, histories, known_rows, fold_one):
    """Stack per-user score rows: known users from ``known_rows``, user 0 folded in from its history."""
    users = np.atleast_1d(np.asarray(users, dtype=np.int64))
    if len(histories) != len(users):
        raise ValueError(f"got {len(users)} users but {len(histories)} histories; pass one history per user "
                         "(an empty array when unknown)")
    out = known_rows(users)
    for r in np.flatnonzero(users == 0):
        out[r] = fold_one(histories[r])
    return out


def fold_in(item_factors, items, alpha: float, reg: float):
    r"""ALS user step for one new user: the best user vector given fixed item factors.

    .. math:: x = (Y^\top Y + \alpha Y_H^\top Y_H + \lambda I)^{-1} (1 + \alpha) Y_H^\top \mathbf 1

    ``item_factors``: ``(n_items + 1, k)`` tensor (row 0, padding, is ignored); ``items``:
    the item IDs the user interacted with. An empty history gives the zero vector.
    """
    Y = torch.as_tensor(item_factors)
    k = Y.shape[1]
    items = _check_items(items, Y.shape[0] - 1)
    if len(items) == 0:
        return torch.zeros(k, dtype=Y.dtype, device=Y.device)
    Yb = Y[1:]
    YH = Y[torch.as_tensor(np.unique(items), device=Y.device)]
    A = Yb.T @ Yb + alpha * YH.T @ YH + reg * torch.eye(k, dtype=Y.dtype, device=Y.device)
    b = (1 + alpha) * YH.sum(0)
    return torch.linalg.solve(A, b)


def nearest_items(vectors, items, k: int = 10, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest items of each of ``items`` in an item-vector table ``(n_items + 1, d)``.

    Returns ``(ids, similarities)``, both ``(len(items), k)``, best first; never the item
    itself nor padding (row 0). ``metric``: ``"cosine"`` (default) or ``"dot"``. One matrix
    product for all the query items.
    """
    V = torch.as_tensor(vectors).detach().float().cpu()
    n = V.shape[0] - 1
    items = np.atleast_1d(np.asarray(items, dtype=np.int64))
    if len(items) and (items.min() < 1 or items.max() > n):
        raise ValueError(f"items must be encoded IDs in 1..{n}, got {items.min()}..{items.max()}")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in 1..{n - 1} (the other items), got {k}")
    if metric == "cosine":
        V = V / V.norm(dim=1, keepdim=True).clamp_min(1e-12)
    elif metric != "dot":
        raise ValueError("metric must be 'cosine' or 'dot'")
    q = torch.as_tensor(items)
    sims = V[q] @ V.T
    sims[:, 0] = -torch.inf
    sims[torch.arange(len(q)), q] = -torch.inf
    top = torch.topk(sims, k, dim=1)
    return top.indices.numpy(), top.values.numpy()


def most_similar(vectors, item: int, k: int = 10, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` items nearest to one ``item`` (see :func:`nearest_items`): ``(ids, similarities)``."""
    n = torch.as_tensor(vectors).shape[0] - 1
    if not 1 <= int(item) <= n:
        raise ValueError(f"item must be an encoded ID in 1..{n}, got {item}")
    ids, sims = nearest_items(vectors, [int(item)], min(k, n - 1), metric)
    return ids[0], sims[0]


# ----------------------------------------------------------------------------- explicit MF


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

    def __init__(self, config: ExplicitMFConfig | None = None, **overrides):
        self.config = configure(ExplicitMFConfig, config, overrides)

    # -- training ---------------------------------------------------------------
    def fit(self, split: Split, progress: bool = False, **kwargs) -> "ExplicitMF":
        valid = split.valid if len(split.valid) and "rating" in split.valid.columns else None
        return self.fit_ratings(split.train, split.n_users, split.n_items, valid=valid, progress=progress)

    def fit_ratings(self, ratings: pd.DataFrame, n_users: int, n_items: int,
                    valid: pd.DataFrame | None = None, progress: bool = False) -> "ExplicitMF":
        """Train on an encoded frame with ``user``, ``item``, ``rating`` columns."""
        for col in ("user", "item", "rating"):
            if col not in ratings.columns:
                raise ValueError(f"ratings frame lacks column {col!r}; ExplicitMF needs user, item, rating")
        if len(ratings) == 0:
            raise ValueError("no ratings to train on")
        cfg = self.config
        dev = _device(cfg.device)
        self.n_users, self.n_items, self.device = n_users, n_items, dev
        g = torch.Generator().manual_seed(cfg.seed)
        u = _long(ratings["user"], dev)
        i = _long(ratings["item"], dev)
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
        _check_fitted(self, "P")
        u = _long(np.atleast_1d(users), self.device)
        i = _long(np.atleast_1d(items), self.device)
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
    def fold_in(self, items, ratings=None) -> tuple[float, torch.Tensor]:
        r"""``(b_u, p_u)`` for a new user: ridge regression of the residuals :math:`r - \mu - b_i`
        on :math:`[1, q_i]` over the given items (ratings default to ``assumed_rating``)."""
        _check_fitted(self, "P")
        raw = np.asarray(items, dtype=np.int64).ravel()
        r = np.full(len(raw), self.config.assumed_rating, np.float32) if ratings is None \
            else np.asarray(ratings, np.float32).ravel()
        if len(r) != len(raw):
            raise ValueError(f"got {len(raw)} items but {len(r)} ratings; pass one rating per item (or none)")
        items = _check_items(raw, self.n_items)
        r = r[raw > 0]
        k = self.config.factors
        if len(items) == 0:
            return 0.0, torch.zeros(k, device=self.device)
        idx = torch.as_tensor(items, device=self.device)
        resid = torch.as_tensor(r, device=self.device) - self.mu_ - self.bi[idx]
        Z = torch.cat([torch.ones(len(items), 1, device=self.device), self.Q[idx]], dim=1)
        lam = torch.diag(torch.tensor([self.config.bias_reg] + [self.config.reg] * k, device=self.device))
        w = torch.linalg.solve(Z.T @ Z + len(items) * lam, Z.T @ resid)
        return float(w[0]), w[1:]

    @torch.no_grad()
    def score(self, users, histories):
        _check_fitted(self, "P")

        def known(us):
            u = _long(us, self.device)
            return self.mu_ + self.bu[u][:, None] + self.bi[None, :] + self.P[u] @ self.Q.T

        def new(h):
            b, p = self.fold_in(h)
            return self.mu_ + b + self.bi + self.Q @ p

        return _score_rows(users, histories, known, new)


# ----------------------------------------------------------------------------- BPR


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

    ``history_`` holds the per-epoch mean training loss (and validation NDCG@10 when
    ``fit(..., eval_every=n)``). New users (ID 0) are folded in with :meth:`fold_in`.
    """

    name = "BPR-MF"

    def __init__(self, config: BPRConfig | None = None, **overrides):
        self.config = configure(BPRConfig, config, overrides)

    def fit(self, split: Split, progress: bool = False, eval_every: int = 0, **kwargs) -> "BPRMF":
        cfg = self.config
        dev = _device(cfg.device)
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
        self.history_ = {"epoch": [], "loss": [], "valid_ndcg@10": []}
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
            ndcg = float("nan")
            if eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == cfg.epochs):
                from ..metrics import evaluate

                ndcg = evaluate(self, split, stage="valid")["NDCG@10"]
            self.history_["valid_ndcg@10"].append(ndcg)
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
        _check_fitted(self, "P")
        cfg = self.config

        def known(us):
            return self.P[_long(us, self.device)] @ self.Q.T + self.b[None, :]

        def new(h):
            return self.Q @ self.fold_in(h) + self.b

        return _score_rows(users, histories, known, new)

    def fold_in(self, items) -> torch.Tensor:
        r"""A user vector for a new user who interacted with ``items``, item factors fixed.

        The BPR loss itself, over **every** pair (clicked :math:`i`, not clicked :math:`j`):
        :math:`\min_p \frac{1}{|P|}\sum_{(i, j)} \mathrm{softplus}(x_j - x_i) + \lambda \lVert p\rVert^2`,
        full batch, ``fold_steps`` Adam steps from :math:`p = 0` (deterministic).
        An empty history gives the zero vector (the item biases alone: popularity).
        """
        _check_fitted(self, "Q")
        cfg = self.config
        items = np.unique(_check_items(items, self.n_items))
        p = torch.zeros(self.Q.shape[1], device=self.device)
        if len(items) == 0 or len(items) >= self.n_items:
            return p
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
        return p.detach()

    @property
    def item_factors(self) -> torch.Tensor:
        _check_fitted(self, "Q")
        return self.Q.detach()


# ----------------------------------------------------------------------------- ALS


def _dense_or_sparse_rows(R):
    """R as a torch sparse CSR-free COO pieces: (rows, cols, values) int64/int64/float32 numpy."""
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
    rows, cols, vals, shape = _dense_or_sparse_rows(R)
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

    def __init__(self, config: ALSConfig | None = None, **overrides):
        self.config = configure(ALSConfig, config, overrides)

    def fit(self, split: Split, progress: bool = False, track_loss: bool = False, **kwargs) -> "ALS":
        cfg = self.config
        dev = _device(cfg.device)
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

    @torch.no_grad()
    def score(self, users, histories):
        _check_fitted(self, "X")
        cfg = self.config

        def known(us):
            return self.X[_long(us, self.device)] @ self.Y.T

        def new(h):
            return self.Y @ fold_in(self.Y, h, cfg.alpha, cfg.reg)

        return _score_rows(users, histories, known, new)

    @property
    def item_factors(self) -> torch.Tensor:
        _check_fitted(self, "Y")
        return self.Y
