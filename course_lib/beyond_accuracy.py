r"""Beyond accuracy: how diverse, how novel, how far from the user's past a list is.

All functions take top-k lists as an ``(U, k)`` array of encoded item IDs (IDs < 1: 0 =
padding and the -1 fill of a short ``recommend`` list, are ignored) and are vectorised over users.

* **Intra-list diversity** (Ziegler et al. 2005): the mean pairwise distance between the
  items of one list, :math:`\mathrm{ILD}(L) = \frac{1}{|L|(|L|-1)} \sum_{i \ne j \in L}
  \big(1 - \cos(f_i, f_j)\big)`, in some feature space (genres, usually). Computed without
  forming the pairs: with :math:`s = \sum_{i \in L} \hat f_i` (unit vectors),
  :math:`\sum_{i \ne j} \cos(f_i, f_j) = \lVert s \rVert^2 - \sum_i \lVert \hat f_i \rVert^2`.
* **Novelty** (self-information): :math:`\frac{1}{|L|} \sum_{i \in L} -\log_2 p_i` with
  :math:`p_i` the share of training users who interacted with :math:`i`: recommending
  what everybody already knows is not news.
* **Similarity to history**: the mean cosine between each recommended item and the
  centroid of the user's history in feature space; high values are the *filter bubble*.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp


def _lists(topk) -> np.ndarray:
    topk = np.asarray(topk)
    if topk.ndim == 1:
        topk = topk[None, :]
    if topk.ndim != 2 or not np.issubdtype(topk.dtype, np.integer):
        raise ValueError(f"top-k lists must be a 2-D integer array (users x k), got shape {topk.shape} and dtype {topk.dtype}")
    return topk.astype(np.int64)


def _unit_rows(features) -> sp.csr_matrix:
    F = sp.csr_matrix(features, dtype=np.float64)
    norms = np.sqrt(np.asarray(F.multiply(F).sum(1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv) @ F)


def _list_matrix(topk: np.ndarray, n_cols: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(topk.shape[0]), topk.shape[1])
    cols = topk.ravel()
    keep = cols > 0
    if keep.any() and cols[keep].max() >= n_cols:
        raise ValueError(f"top-k lists hold item ID {cols.max()} but the features have only {n_cols} rows")
    return sp.csr_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(topk.shape[0], n_cols))


def intra_list_diversity(topk, features, per_user: bool = False):
    """Mean pairwise cosine distance inside each list (items without features count as distance 1).

    ``features``: ``(n_items + 1, d)`` sparse or dense, row ``i`` for item ``i``. A list
    with fewer than two items has diversity ``nan``. Returns the mean over lists
    (ignoring ``nan``), or the per-list array when ``per_user``.
    """
    topk = _lists(topk)
    F = _unit_rows(features)
    L = _list_matrix(topk, F.shape[0])
    n = np.asarray(L.sum(1)).ravel()
    S = L @ F  # sum of unit vectors per list
    sq = np.asarray(S.multiply(S).sum(1)).ravel()
    self_sim = np.asarray(L @ np.asarray(F.multiply(F).sum(1))).ravel()  # 1 per item with features
    pairs = n * (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ild = np.where(pairs > 0, 1.0 - (sq - self_sim) / np.where(pairs > 0, pairs, 1), np.nan)
    return ild if per_user else float(np.nanmean(ild)) if np.isfinite(ild).any() else float("nan")


def novelty(topk, popularity, n_users: int, per_user: bool = False):
    r"""Mean self-information :math:`-\log_2(\max(c_i, 1) / n_{users})` of the listed items.

    ``popularity``: training interaction counts per item ID (``split.item_popularity()``);
    an item nobody has seen counts as seen once (the most novel possible).
    """
    topk = _lists(topk)
    pop = np.asarray(popularity, dtype=float)
    if n_users < 1:
        raise ValueError("n_users must be >= 1")
    info = -np.log2(np.clip(np.maximum(pop, 1.0) / n_users, None, 1.0))
    valid = topk > 0
    vals = np.where(valid, info[topk], 0.0).sum(1) / np.maximum(valid.sum(1), 1)
    vals = np.where(valid.any(1), vals, np.nan)
    return vals if per_user else float(np.nanmean(vals))


def history_similarity(topk, histories: Sequence[np.ndarray], features, per_user: bool = False):
    """Mean cosine between each listed item and the centroid of the user's history (feature space).

    1 means "more of exactly the same"; users with an empty history get ``nan``.
    """
    topk = _lists(topk)
    if len(histories) != len(topk):
        raise ValueError(f"got {len(topk)} lists but {len(histories)} histories")
    F = _unit_rows(features)
    lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if lens.sum() else np.zeros(0, np.int64)
    Hm = sp.csr_matrix((np.ones(len(flat)), (np.repeat(np.arange(len(histories)), lens), flat)),
                       shape=(len(histories), F.shape[0]))
    centroid = _unit_rows(Hm @ F)  # (U, d)
    L = _list_matrix(topk, F.shape[0])
    n = np.asarray(L.sum(1)).ravel()
    total = np.asarray((L @ F).multiply(centroid).sum(1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = np.where((n > 0) & (lens > 0), total / np.maximum(n, 1), np.nan)
    return vals if per_user else float(np.nanmean(vals))


def beyond_accuracy(model, split, features, stage: str = "test", k: int = 10, users=None, batch_size: int = 512) -> dict:
    """Top-``k`` lists of ``model`` for ``stage`` and their diversity, novelty, bubble and coverage.

    ``features`` is the space for diversity and history similarity (e.g.
    :func:`course_lib.models.content.genre_matrix`). Returns a dict with ``ILD@k``,
    ``Novelty@k``, ``HistorySim@k``, ``Coverage@k`` and ``AvgPop@k``.
    """
    from .metrics import average_popularity, catalog_coverage

    histories = split.history(stage)
    users = np.arange(1, split.n_users + 1) if users is None else np.asarray(users, dtype=np.int64)
    lists = []
    for start in range(0, len(users), batch_size):
        u = users[start: start + batch_size]
        # copies: pandas may hand out read-only arrays, which torch warns about
        lists.append(model.recommend(u, [np.array(histories[i]) for i in u], k=k))
    topk = np.concatenate(lists)
    pop = split.item_popularity()
    return {
        f"ILD@{k}": intra_list_diversity(topk, features),
        f"Novelty@{k}": novelty(topk, pop, split.n_users),
        f"HistorySim@{k}": history_similarity(topk, [histories[i] for i in users], features),
        f"Coverage@{k}": catalog_coverage(topk, split.n_items),
        f"AvgPop@{k}": average_popularity(topk, pop),
    }
