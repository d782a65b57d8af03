r"""Similarity and neighbours: item-based and user-based k-NN, and the nearest items in any vector space.

This module is the course's one home for "which items are similar": the cosine of sparse
interaction (or feature) rows that the neighbourhood models use (:func:`cosine_similarity`),
and the nearest items in a dense vector space, such as the item factors of matrix
factorization or item2vec's embeddings (:func:`nearest_items`, :func:`most_similar`).

Both work on the implicit (0/1) training matrix :math:`X` (users x items, row and
column 0 are padding) and the **cosine similarity with shrinkage**

.. math::

   s(a, b) = \frac{x_a \cdot x_b}{\lVert x_a \rVert\,\lVert x_b \rVert + \lambda}

where :math:`x_a` is a column of :math:`X` (item-based) or a row (user-based) and the
shrinkage :math:`\lambda \ge 0` pulls the similarity of pairs with little support
(few common users) towards zero.

* :class:`ItemKNN` keeps, for every item :math:`j`, its ``k`` most similar items
  :math:`N_k(j)` and scores item :math:`i` for a history :math:`H` by
  :math:`\hat r_i = \sum_{j \in H} w_j\, s(j, i)\,[i \in N_k(j)]`: it needs **only the
  history**, so it serves a brand-new user after a few clicks. The weights
  :math:`w_j` are 1, or (``recency``) :math:`2^{-\text{age}_j / h}` with
  :math:`\text{age}_j` the number of items clicked after :math:`j`.
* :class:`UserKNN` finds the ``k`` users most similar to the query user and scores
  :math:`\hat r_i = \sum_{v \in N_k(u)} s(u, v)\, x_{v i}`. The query user's vector is
  their training row together with the history passed to ``score`` (so the held-out
  validation item counts at test time); a new user (ID 0 or unknown) is represented
  by the history alone.

Everything is sparse (``scipy.sparse``) and vectorised; the only loops run over the
rows of a similarity matrix in chunks. :func:`nearest_items` takes a dense table
``(n_items + 1, d)`` (NumPy or torch) and ranks with one matrix product.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from ..prep import interaction_matrix
from .base import Recommender, configure


@dataclass
class KNNConfig:
    """Hyper-parameters of the neighbourhood models (ItemKNN's defaults).

    ``k``: neighbours kept per item (ItemKNN, ContentKNN) or per query user (UserKNN);
    ``shrink``: the :math:`\\lambda` of the cosine above; ``recency``: half-life, in
    items, of the weight of a history item (``None``: every item weighs 1).
    """
    k: int = 50
    shrink: float = 10.0
    recency: float | None = None

    def __post_init__(self):
        if not (isinstance(self.k, (int, np.integer)) and self.k >= 1):
            raise ValueError(f"k (the number of neighbours) must be an integer >= 1, got {self.k!r}")
        if not self.shrink >= 0:
            raise ValueError(f"shrink must be >= 0, got {self.shrink!r}")
        if self.recency is not None and not self.recency > 0:
            raise ValueError(f"recency (a half-life in items) must be > 0 or None, got {self.recency!r}")


@dataclass
class UserKNNConfig(KNNConfig):
    """UserKNN's defaults: 30 neighbouring users (the fields are those of :class:`KNNConfig`)."""
    k: int = 30


# ----------------------------------------------------------------------------- building blocks


def cosine_similarity(A, B=None, shrink: float = 0.0) -> sp.csr_matrix:
    r"""Cosine similarity between the **rows** of sparse ``A`` and those of ``B`` (default ``A``).

    :math:`s_{ab} = a \cdot b / (\lVert a \rVert \lVert b \rVert + \lambda)`; an all-zero
    row has similarity 0 with everything (never NaN). Returns a sparse ``(len(A), len(B))``
    matrix.
    """
    if shrink < 0:
        raise ValueError(f"shrink must be >= 0, got {shrink}")
    A = sp.csr_matrix(A, dtype=np.float32)
    B = A if B is None else sp.csr_matrix(B, dtype=np.float32)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must have the same number of columns, got {A.shape} and {B.shape}")
    na = np.sqrt(np.asarray(A.multiply(A).sum(1)).ravel())
    nb = na if B is A else np.sqrt(np.asarray(B.multiply(B).sum(1)).ravel())
    dots = (A @ B.T).tocsr()
    dots.sum_duplicates()
    rows = np.repeat(np.arange(dots.shape[0]), np.diff(dots.indptr))
    denom = na[rows] * nb[dots.indices] + shrink
    with np.errstate(divide="ignore", invalid="ignore"):
        dots.data = np.where(denom > 0, dots.data / np.where(denom > 0, denom, 1.0), 0.0).astype(np.float32)
    dots.eliminate_zeros()
    return dots


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


def topk_prune(S, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row of ``S`` (sparse or dense); zeros are never kept.

    Ties at the k-th value are broken by column index (lower wins), so the result is
    deterministic.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    S = sp.csr_matrix(S, dtype=np.float32)
    S.sum_duplicates()
    S.eliminate_zeros()
    counts = np.diff(S.indptr)
    if counts.max(initial=0) <= k:
        return S.copy()
    n_rows = S.shape[0]
    rows = np.repeat(np.arange(n_rows), counts)
    # sort by row, then by value descending, then by column: one lexsort, no Python loop
    order = np.lexsort((S.indices, -S.data, rows))
    rank = np.arange(len(order)) - np.repeat(S.indptr[:-1], counts)
    keep = order[rank < k]
    out = sp.csr_matrix((S.data[keep], (rows[keep], S.indices[keep])), shape=S.shape, dtype=np.float32)
    return out


def history_matrix(histories: Sequence[np.ndarray], n_items: int, recency: float | None = None) -> sp.csr_matrix:
    """Stack histories (arrays of item IDs, oldest first) into a sparse ``(B, n_items + 1)`` matrix.

    Each item weighs 1, or with ``recency=h`` :math:`2^{-\\text{age}/h}` where age is the
    number of items after it in the history (the last item weighs 1). A repeated item
    keeps its largest weight. Padding (0) is dropped.
    """
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    flat = np.concatenate([np.asarray(h, dtype=np.int64).ravel() for h in histories]) if lens.sum() else np.zeros(0, np.int64)
    if len(flat) and (flat.min() < 0 or flat.max() > n_items):
        raise ValueError(f"histories hold item IDs outside 0..{n_items}; encode them with the split's item_map")
    rows = np.repeat(np.arange(len(histories)), lens)
    if recency is None:
        vals = np.ones(len(flat), dtype=np.float32)
    else:
        ends = np.repeat(np.cumsum(lens), lens)
        age = ends - 1 - np.arange(len(flat))
        vals = np.power(2.0, -age / recency).astype(np.float32)
    keep = flat > 0
    return _max_duplicates(rows[keep], flat[keep], vals[keep], (len(histories), n_items + 1))


def _max_duplicates(rows, cols, vals, shape) -> sp.csr_matrix:
    order = np.lexsort((-vals, cols, rows))
    r, c, v = rows[order], cols[order], vals[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    return sp.csr_matrix((v[first], (r[first], c[first])), shape=shape, dtype=np.float32)


def _check_fitted(model, attr: str) -> None:
    if not hasattr(model, attr):
        raise RuntimeError(f"{type(model).__name__} is not fitted yet: call fit(split) before score()")


def _check_batch(users, histories) -> np.ndarray:
    users = np.atleast_1d(np.asarray(users, dtype=np.int64))
    if len(users) != len(histories):
        raise ValueError(f"got {len(users)} users but {len(histories)} histories; pass one history per user")
    return users


def _finish(scores: np.ndarray) -> np.ndarray:
    scores[:, 0] = -np.inf
    return scores


class _ItemNeighbourhood(Recommender):
    """Shared by ItemKNN and ContentKNN: a pruned item-item matrix ``W`` (row j: j's neighbours)."""

    def score(self, users, histories) -> np.ndarray:
        _check_fitted(self, "W_")
        _check_batch(users, histories)
        H = history_matrix(histories, self.n_items, self.config.recency)
        return _finish(np.asarray((H @ self.W_).todense(), dtype=np.float32))

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The (at most) ``k`` nearest neighbours of ``item`` and their similarities, best first."""
        _check_fitted(self, "W_")
        if not 1 <= int(item) <= self.n_items:
            raise ValueError(f"item must be an encoded item ID in 1..{self.n_items}, got {item}")
        row = self.W_.getrow(int(item))
        order = np.lexsort((row.indices, -row.data))[:k]
        return row.indices[order].astype(np.int64), row.data[order].astype(np.float32)

    def _set_similarity(self, S: sp.csr_matrix) -> None:
        S = sp.coo_matrix(S)
        # no self-similarity; padding has no neighbours and is nobody's neighbour
        keep = (S.row != S.col) & (S.row > 0) & (S.col > 0)
        S = sp.csr_matrix((S.data[keep], (S.row[keep], S.col[keep])), shape=S.shape, dtype=np.float32)
        self.W_ = topk_prune(S, self.config.k)


class ItemKNN(_ItemNeighbourhood):
    """Item-based collaborative filtering (Sarwar et al. 2001; Deshpande & Karypis 2004)."""

    name = "ItemKNN"

    config_class = KNNConfig

    def fit(self, split, **kwargs) -> "ItemKNN":
        self.n_items = split.n_items
        X = interaction_matrix(split.train, split.n_users, split.n_items, implicit=True)
        self._set_similarity(cosine_similarity(X.T.tocsr(), shrink=self.config.shrink))
        return self

    def __repr__(self) -> str:
        return f"ItemKNN(k={self.config.k}, shrink={self.config.shrink}, recency={self.config.recency})"


class UserKNN(Recommender):
    """User-based collaborative filtering (Resnick et al. 1994; Herlocker et al. 1999), implicit feedback."""

    name = "UserKNN"

    def __init__(self, config: KNNConfig | None = None, **overrides):
        self.config = configure(KNNConfig, config if config is not None else UserKNNConfig(), overrides)

    def fit(self, split, **kwargs) -> "UserKNN":
        self.n_items, self.n_users = split.n_items, split.n_users
        X = interaction_matrix(split.train, split.n_users, split.n_items, implicit=True)
        self.X_ = X
        self.XT_ = X.T.tocsr()
        self.norms_ = np.sqrt(np.asarray(X.sum(1)).ravel()).astype(np.float32)
        return self

    def query_vectors(self, users, histories) -> sp.csr_matrix:
        """The query users' 0/1 vectors: training row (known users) OR history."""
        users = _check_batch(users, histories)
        Q = history_matrix(histories, self.n_items)
        known = (users >= 1) & (users <= self.n_users)
        rows = sp.csr_matrix(self.X_[np.where(known, users, 0)])  # row 0 is empty
        Q = Q.maximum(rows)
        Q.data[:] = 1.0
        return Q

    def neighbours(self, users, histories) -> sp.csr_matrix:
        """Sparse ``(B, n_users + 1)``: each query user's ``k`` nearest training users and similarities."""
        _check_fitted(self, "X_")
        users = _check_batch(users, histories)
        Q = self.query_vectors(users, histories)
        qn = np.sqrt(np.asarray(Q.sum(1)).ravel())
        dots = np.asarray((Q @ self.XT_).todense(), dtype=np.float32)  # (B, n_users + 1)
        sims = dots / (qn[:, None] * self.norms_[None, :] + self.config.shrink + 1e-12)
        known = (users >= 1) & (users <= self.n_users)
        sims[np.flatnonzero(known), users[known]] = 0.0  # a user is not their own neighbour
        sims[:, 0] = 0.0
        return topk_prune(sims, self.config.k)

    def score(self, users, histories) -> np.ndarray:
        N = self.neighbours(users, histories)
        return _finish(np.asarray((N @ self.X_).todense(), dtype=np.float32))

    def __repr__(self) -> str:
        return f"UserKNN(k={self.config.k}, shrink={self.config.shrink})"
