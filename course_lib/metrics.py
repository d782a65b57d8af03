r"""Ranking metrics and the evaluator every model in the course goes through.

Two layers:

* **per-list functions** (``hit_at_k``, ``precision_at_k``, ``recall_at_k``,
  ``ndcg_at_k``, ``reciprocal_rank``) take one ranked list and a set of relevant
  items. They are short, readable, and what the exercises reimplement. An item that
  appears more than once in a list counts once, at its first position (a repeat is a
  wasted slot, never a second hit), and a fill value such as -1 is simply not relevant,
  so every metric stays in [0, 1].
* **``evaluate``** scores users in batches, excludes what each user has already
  seen, and computes every metric from the *rank* of each held-out item
  (:func:`rank_among_candidates`, also behind :func:`tie_rank`).

Around them: what sampled evaluation does to a target of known full rank
(:func:`sampled_hit_probability`, :func:`expected_sampled_metrics`, Krichene & Rendle,
KDD 2020), list-level measures (:func:`catalog_coverage`, :func:`average_popularity`)
and uncertainty over users (:func:`bootstrap_ci`, :func:`paired_bootstrap`).

What "seen" means is one explicit choice, shared with
:meth:`course_lib.models.base.Recommender.recommend`: ``exclude_seen=True`` (the default)
removes the user's whole history from the candidates, so a held-out item that repeats an
earlier one (repeat consumption) can never be recommended and counts as a miss;
``exclude_seen=False`` keeps every item a candidate. Either way the HR@k of ``evaluate``
is the HR@k of the lists ``recommend`` serves with the same option (ties aside: ``evaluate``
counts them against the model).

Ties count against the model. An item's rank is the number of candidate items that
score **at least as high** as it does, so a model that gives every item the same
score ranks the target last, not first. With several relevant items per user, the
j-th best relevant item (in that pessimistic order) sits at position
:math:`r_{(j)} + j`, where :math:`r_{(j)}` counts the non-relevant candidates that tie
or beat it.

.. math::

   \mathrm{NDCG@k} = \frac{1}{\mathrm{IDCG@k}} \sum_{p < k,\ p \in \text{relevant positions}} \frac{1}{\log_2(p + 2)}
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .models.base import topk_allowed

# ----------------------------------------------------------------------------- per-list


def _topk_list(ranked, k: int) -> list:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return list(ranked)[:k]


def _hit_positions(ranked, rel: set, k: int | None = None) -> list[int]:
    """0-based positions (within the first ``k``, or all) of relevant items, each item counted once: at its first occurrence."""
    items = list(ranked) if k is None else _topk_list(ranked, k)
    found, out = set(), []
    for p, i in enumerate(items):
        if i in rel and i not in found:
            found.add(i)
            out.append(p)
    return out


def hit_at_k(ranked: Sequence, relevant: Iterable, k: int) -> float:
    """1.0 if any relevant item is among the first ``k`` of ``ranked``."""
    rel = set(relevant)
    return float(any(i in rel for i in _topk_list(ranked, k)))


def precision_at_k(ranked: Sequence, relevant: Iterable, k: int) -> float:
    """Fraction of the first ``k`` slots that hold a relevant item (a repeated item fills one slot, the rest are misses)."""
    return len(_hit_positions(ranked, set(relevant), k)) / k


def recall_at_k(ranked: Sequence, relevant: Iterable, k: int) -> float:
    """Fraction of the relevant items found in the first ``k`` (each found item counted once)."""
    rel = set(relevant)
    if not rel:
        return 0.0
    return len(_hit_positions(ranked, rel, k)) / len(rel)


def dcg_at_k(ranked: Sequence, relevant: Iterable, k: int) -> float:
    """Binary-relevance DCG@k; a relevant item that repeats earns its gain once, at its first position."""
    return sum(1.0 / math.log2(p + 2) for p in _hit_positions(ranked, set(relevant), k))


def ndcg_at_k(ranked: Sequence, relevant: Iterable, k: int) -> float:
    """Binary-relevance NDCG@k of one ranked list; 0.0 when nothing is relevant."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rel = set(relevant)
    ideal = sum(1.0 / math.log2(p + 2) for p in range(min(len(rel), k)))
    return dcg_at_k(ranked, rel, k) / ideal if ideal > 0 else 0.0


def reciprocal_rank(ranked: Sequence, relevant: Iterable) -> float:
    """1 / (1 + position of the first relevant item), 0.0 if none appears."""
    rel = set(relevant)
    for p, i in enumerate(ranked):
        if i in rel:
            return 1.0 / (p + 1)
    return 0.0


# ----------------------------------------------------------------------------- from positions


def metrics_from_positions(positions: np.ndarray, n_relevant: np.ndarray, n_negatives: np.ndarray,
                           neg_ranks: np.ndarray, ks: Sequence[int]) -> pd.DataFrame:
    """Per-user metrics from the (pessimistic) 0-based positions of each user's relevant items.

    ``positions``: (U, T) float, ``inf`` for padding; ``n_relevant``: (U,);
    ``n_negatives``: (U,) candidates that are not relevant; ``neg_ranks``: (U, T) the
    number of non-relevant candidates at least as high as each relevant item (``nan``
    for padding), used for AUC. A relevant item that is no candidate at all (excluded as
    seen) has position ``inf`` and a ``neg_rank`` equal to ``n_negatives`` (AUC 0).
    """
    out = {}
    valid = np.isfinite(positions)
    for k in ks:
        hit = valid & (positions < k)
        n_hit = hit.sum(1)
        gains = np.where(hit, 1.0 / np.log2(np.where(hit, positions, 0) + 2), 0.0).sum(1)
        ideal = np.array([sum(1.0 / math.log2(p + 2) for p in range(min(int(n), k))) for n in n_relevant])
        out[f"HR@{k}"] = (n_hit > 0).astype(float)
        out[f"Recall@{k}"] = n_hit / np.maximum(n_relevant, 1)
        out[f"Precision@{k}"] = n_hit / k
        out[f"NDCG@{k}"] = np.divide(gains, ideal, out=np.zeros_like(gains), where=ideal > 0)
    first = np.where(valid, positions, np.inf).min(1)
    out["MRR"] = np.where(np.isfinite(first), 1.0 / (first + 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_each = 1.0 - neg_ranks / np.maximum(n_negatives, 1)[:, None]
        out["AUC"] = np.nanmean(np.where(np.isnan(neg_ranks), np.nan, auc_each), axis=1)
    return pd.DataFrame(out)


def _positions_from_neg_ranks(neg_ranks: np.ndarray) -> np.ndarray:
    """Relevant items sorted by their non-relevant rank; the j-th sits at r_(j) + j."""
    r = np.sort(np.where(np.isnan(neg_ranks), np.inf, neg_ranks), axis=1)
    return r + np.arange(r.shape[1])[None, :]


# ----------------------------------------------------------------------------- evaluator


def _as_tensor(scores) -> torch.Tensor:
    """Scores as a float32 CPU tensor (from a NumPy array or a tensor on any device)."""
    if isinstance(scores, np.ndarray):
        scores = torch.from_numpy(scores)
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"model.score must return a numpy array or torch tensor, got {type(scores).__name__}")
    return scores.detach().float().cpu()


def _targets_matrix(targets: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Users (U,) and their relevant items padded with 0 into (U, T)."""
    grouped = targets.groupby("user", sort=True)["item"].apply(lambda s: np.unique(s.to_numpy()))
    users = grouped.index.to_numpy(np.int64)
    width = max((len(v) for v in grouped), default=1)
    rel = np.zeros((len(users), width), dtype=np.int64)
    for r, v in enumerate(grouped):
        rel[r, : len(v)] = v
    return users, rel


def sample_negatives(seen_rows: np.ndarray, relevant: np.ndarray, n: int, n_items: int,
                     popularity: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` negatives per row among items the user has not seen and that are not relevant.

    ``seen_rows``: (B, n_items + 1) bool; ``popularity`` None for uniform sampling,
    else per-item weights (sampling without replacement within a row is not required:
    duplicates are resampled).
    """
    B = seen_rows.shape[0]
    forbidden = seen_rows.copy()
    forbidden[:, 0] = True
    forbidden[np.arange(B)[:, None], relevant] = True  # relevant 0-padding hits column 0, already forbidden
    allowed = (~forbidden).sum(1)
    if (allowed < n).any():
        bad = int(np.argmin(allowed))
        raise ValueError(f"a user has only {allowed[bad]} unseen items, fewer than the {n} negatives asked for")
    if popularity is None:
        p = np.ones(n_items + 1)
    else:
        p = np.asarray(popularity, dtype=float) + 1e-12
    p[0] = 0.0
    p = p / p.sum()
    out = np.zeros((B, n), dtype=np.int64)
    for b in range(B):
        ok = np.flatnonzero(~forbidden[b])
        w = p[ok] / p[ok].sum()
        out[b] = rng.choice(ok, size=n, replace=False, p=w)
    return out


def rank_among_candidates(scores, target_scores, candidates, ties: str = "pessimistic") -> torch.Tensor:
    """0-based rank of each target score among each row's candidates: how many score **higher**, plus ties.

    ``scores``: (B, N); ``target_scores``: (B, T), one column per held-out item of the row;
    ``candidates``: (B, N) bool, the items a target competes with (not the targets themselves).
    Ties with candidates count against the model (``"pessimistic"``, the evaluator's rule:
    every candidate scoring at least as high is ranked above), for it (``"optimistic"``) or
    half each way (``"average"``). Each row is sorted once and every target is placed by
    binary search (``searchsorted``), so B x T targets cost one sort per row; non-candidates
    are set to ``-inf`` for the search, and a target scoring ``-inf`` itself is corrected so
    that they do not count as ties. Returns float (B, T).
    """
    if ties not in ("pessimistic", "optimistic", "average"):
        raise ValueError(f"ties must be 'pessimistic', 'optimistic' or 'average', got {ties!r}")
    s = torch.as_tensor(scores).detach().cpu()  # the caller's precision: float32 in evaluate, float64 in tie_rank
    t = torch.as_tensor(target_scores).detach().cpu().to(s.dtype)
    cand = torch.as_tensor(candidates, dtype=torch.bool).cpu()
    n = s.shape[1]
    ordered, _ = torch.sort(torch.where(cand, s, torch.tensor(-torch.inf)), dim=1)
    t = t.contiguous()
    higher = (n - torch.searchsorted(ordered, t, right=True)).float()       # candidates scoring > target
    at_least = (n - torch.searchsorted(ordered, t, right=False)).float()    # ... >= target, non-candidates too
    n_out = (n - cand.sum(1, keepdim=True)).float()                         # when the target is -inf
    at_least = at_least - torch.where(torch.isneginf(t), n_out, torch.zeros_like(t))
    if ties == "pessimistic":
        return at_least
    if ties == "optimistic":
        return higher
    return higher + 0.5 * (at_least - higher)


def tie_rank(scores, target, candidates=None, ties: str = "pessimistic") -> np.ndarray:
    """0-based rank of each row's ``target`` column among that row's candidate items (NumPy in, NumPy out).

    ``scores``: (B, n) scores; ``target``: (B,) column of the held-out item in each row;
    ``candidates``: (B, n) bool, the items it competes with (default: every other
    column; the target itself never counts). Ties as in :func:`rank_among_candidates`:
    against the model (``"pessimistic"``, what :func:`evaluate` does), for it
    (``"optimistic"``, the trap notebook 08 shows) or half and half (``"average"``).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (rows x items), got shape {s.shape}")
    t = np.asarray(target, dtype=np.int64).reshape(-1)
    if len(t) != len(s):
        raise ValueError(f"got {len(s)} rows of scores but {len(t)} targets")
    if ((t < 0) | (t >= s.shape[1])).any():
        raise IndexError(f"targets must be column indices in 0..{s.shape[1] - 1}")
    cand = np.ones_like(s, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool).copy()
    if cand.shape != s.shape:
        raise ValueError(f"candidates has shape {cand.shape}, scores {s.shape}")
    rows = np.arange(len(s))
    cand[rows, t] = False
    st = torch.tensor(s)  # copies (torch.tensor, not from_numpy): the caller's arrays may be read-only
    ranks = rank_among_candidates(st, st[torch.tensor(rows), torch.tensor(t)][:, None], torch.tensor(cand), ties)
    return ranks[:, 0].numpy().astype(float)


@torch.no_grad()
def evaluate(model, split, stage: str = "test", ks: Sequence[int] = (10,), *, exclude_seen: bool = True,
             sampled: int | None = None, sampler: str = "uniform", seed: int = 0,
             per_user: bool = False, batch_size: int = 512, progress: bool = False):
    """Evaluate ``model`` on ``split``'s ``stage`` items, excluding each user's seen items.

    ``model`` needs ``score(users, histories) -> (B, n_items + 1)``. Everything after ``ks``
    is a keyword, in three groups: *what is ranked* (``exclude_seen``); *the protocol*: full
    ranking over the whole catalog by default, ``sampled=100`` ranks each held-out item
    against 100 negatives drawn ``"uniform"``-ly or by ``"popularity"`` instead, drawn with
    ``seed`` (the protocol the sequential-evaluation lesson takes apart); *the output and the
    work* (``per_user``, ``batch_size``, ``progress``).

    ``exclude_seen`` is the same choice as in ``model.recommend``: True (the default)
    removes the user's history (``split.history(stage)``) from the candidates, so a
    held-out item the user had already seen (repeat consumption) is out of every list:
    it counts as a miss (no hit, no gain, AUC 0 for it) but still as relevant. False
    keeps every item, seen or not, a candidate (and a possible negative). So HR@k here
    is the HR@k of the lists ``model.recommend(..., exclude_seen=...)`` serves.

    Returns a dict of means (``HR@k``, ``Recall@k``, ``Precision@k``, ``NDCG@k``,
    ``MRR``, ``AUC``, ``Coverage@k``, ``AvgPop@k``, ``users``), or ``(dict, frame)``
    with one row per user when ``per_user``. ``Coverage@k`` and ``AvgPop@k`` are
    computed on those same top-k lists; slots with no candidate left (-1 fills) are ignored.
    """
    if sampler not in ("uniform", "popularity"):
        raise ValueError("sampler must be 'uniform' or 'popularity'")
    ks = tuple(sorted(set(int(k) for k in ks)))
    n_items = split.n_items
    users, relevant = _targets_matrix(split.targets(stage))
    if len(users) == 0:
        raise ValueError(f"split has no {stage} interactions to evaluate")
    histories = split.history(stage)
    seen = split.seen_matrix(stage)
    pop = split.item_popularity().astype(float)
    rng = np.random.default_rng(seed)
    kmax = max(ks)
    frames, topk_all = [], []
    starts = range(0, len(users), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"evaluate {stage}", unit="batch")
    for start in starts:
        u = users[start: start + batch_size]
        rel = relevant[start: start + batch_size]
        B = len(u)
        scores = _as_tensor(model.score(u, [histories[i] for i in u]))
        if scores.shape != (B, n_items + 1):
            raise ValueError(f"model.score returned shape {tuple(scores.shape)}, expected ({B}, {n_items + 1}): "
                             "one score per item ID, column 0 for padding")
        if torch.isnan(scores).any():
            raise ValueError("model.score returned NaN scores; check the model's training (exploding loss?)")
        seen_b = torch.from_numpy(seen[u].toarray() > 0)
        if not exclude_seen:
            seen_b = torch.zeros_like(seen_b)
        rel_t = torch.from_numpy(rel)
        rel_mask = torch.zeros_like(seen_b)
        rel_mask.scatter_(1, rel_t, True)
        rel_mask[:, 0] = False
        pad = rel_t == 0
        blocked = seen_b.gather(1, rel_t) & ~pad  # relevant but excluded: never in a served list
        t_scores = scores.gather(1, rel_t)  # (B, T)

        # the served top-k lists (the same function as Recommender.recommend), for coverage / popularity
        topk_all.append(topk_allowed(scores, seen_b, kmax))

        if sampled is None:
            cand = ~(seen_b | rel_mask)
            cand[:, 0] = False
            n_neg = cand.sum(1)
            neg_rank = rank_among_candidates(scores, t_scores, cand)
        else:
            negs = torch.from_numpy(sample_negatives(seen_b.numpy(), rel, sampled, n_items,
                                                     pop if sampler == "popularity" else None, rng))
            neg_scores = scores.gather(1, negs)  # (B, n)
            neg_rank = (neg_scores[:, None, :] >= t_scores[:, :, None]).sum(2).float()
            n_neg = torch.full((B,), sampled)
        neg_rank = torch.where(blocked, n_neg[:, None].float(), neg_rank)  # below every negative: AUC 0
        neg_rank = torch.where(pad, torch.tensor(float("nan")), neg_rank).numpy()
        positions = _positions_from_neg_ranks(np.where(blocked.numpy(), np.inf, neg_rank))
        frame = metrics_from_positions(positions, (~pad).sum(1).numpy(), n_neg.numpy(), neg_rank, ks)
        frame.insert(0, "user", u)
        frames.append(frame)

    table = pd.concat(frames, ignore_index=True)
    topk = np.concatenate(topk_all)
    result = {c: float(table[c].mean()) for c in table.columns if c != "user"}
    for k in ks:
        result[f"Coverage@{k}"] = catalog_coverage(topk[:, :k], n_items)
        result[f"AvgPop@{k}"] = average_popularity(topk[:, :k], pop)
    result["users"] = int(len(users))
    return (result, table) if per_user else result


# ----------------------------------------------------------------------------- sampled evaluation, in theory


def sampled_hit_probability(rank, n_negatives, n_samples: int = 100, k: int = 10) -> np.ndarray:
    """P(the target lands in the top ``k`` among ``n_samples`` negatives drawn uniformly without replacement).

    ``rank``: how many of the ``n_negatives`` candidate negatives score above the target
    (its 0-based full rank). Vectorised over ``rank`` and ``n_negatives``.
    """
    from scipy.stats import hypergeom

    r = np.asarray(rank, dtype=np.int64)
    n = np.broadcast_to(np.asarray(n_negatives, dtype=np.int64), r.shape)
    if (r < 0).any() or (r > n).any():
        raise ValueError("rank must lie in 0..n_negatives")
    if n_samples < 1 or k < 1:
        raise ValueError("n_samples and k must be >= 1")
    m = np.minimum(n_samples, n)
    return np.asarray(hypergeom.cdf(k - 1, n, r, m), dtype=float)


def expected_sampled_metrics(rank, n_negatives, n_samples: int = 100, k: int = 10) -> dict:
    r"""Expected sampled HR@k and NDCG@k per target, from its full rank (see the module docstring).

    Returns ``{"HR@k": array, "NDCG@k": array}``; their means predict what
    ``evaluate(..., sampled=n_samples)`` measures with a uniform sampler.
    """
    from scipy.stats import hypergeom

    r = np.asarray(rank, dtype=np.int64)
    n = np.broadcast_to(np.asarray(n_negatives, dtype=np.int64), r.shape)
    m = np.minimum(n_samples, n)
    j = np.arange(k)[:, None]
    pmf = hypergeom.pmf(j, n.reshape(-1)[None, :], r.reshape(-1)[None, :], m.reshape(-1)[None, :])  # (k, U)
    hr = pmf.sum(0).reshape(r.shape)
    ndcg = (pmf / np.log2(j + 2)).sum(0).reshape(r.shape)
    return {f"HR@{k}": hr, f"NDCG@{k}": ndcg}


# ----------------------------------------------------------------------------- beyond accuracy, uncertainty


def catalog_coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the catalog (items 1..n) that appears in at least one top-k list (IDs < 1, padding and -1 fills, ignored)."""
    items = np.unique(np.asarray(topk))
    return float(np.count_nonzero((items > 0) & (items <= n_items)) / n_items)


def average_popularity(topk: np.ndarray, popularity: np.ndarray) -> float:
    """Mean training popularity (interaction count) of the recommended items.

    Only real items count: IDs < 1 (padding 0, the -1 fill of a short list) are ignored;
    ``nan`` when no list holds an item.
    """
    topk = np.asarray(topk, dtype=np.int64)
    items = topk[topk > 0]
    if items.size == 0:
        return float("nan")
    return float(np.asarray(popularity, dtype=float)[items].mean())


def bootstrap_ci(per_user: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile bootstrap confidence interval of a per-user metric."""
    x = np.asarray(per_user, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    return float(x.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_bootstrap(a, b, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its percentile bootstrap interval, resampling **users** (pairs) jointly.

    ``a`` and ``b`` are per-user metrics of two models on the same users, in the same
    order: this is :func:`bootstrap_ci` of the per-user differences. An interval that
    excludes 0 says the difference is unlikely to be noise.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D per-user metrics of the same users, got shapes {a.shape}, {b.shape}")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    return bootstrap_ci(a - b, n_boot=n_boot, alpha=alpha, seed=seed)
