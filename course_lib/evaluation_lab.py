r"""Reference functions for notebooks 08 (evaluating sequential recommenders) and 09 (the BERT4Rec lab).

Notebook 08: how a metric is computed changes what it says.

* :func:`tie_rank`: the rank of a held-out item among candidates, with ties counted
  against the model (``"pessimistic"``, what :func:`course_lib.metrics.evaluate` does),
  for it (``"optimistic"``, the trap) or half and half (``"average"``);
* :func:`sampled_hit_probability`, :func:`expected_sampled_metrics`: what sampled
  evaluation (rank the target among ``m`` random negatives instead of the whole
  catalog) does to a target whose full rank is :math:`r` (Krichene & Rendle, KDD 2020).
  With :math:`N` candidate negatives of which :math:`r` score above the target, the
  number :math:`X` of those among the ``m`` sampled ones is hypergeometric, and

  .. math::

     P(\text{hit@}k) = P(X \le k - 1), \qquad
     \mathbb{E}[\text{NDCG@}k] = \sum_{j=0}^{k-1} \frac{P(X = j)}{\log_2(j + 2)};

* :func:`paired_bootstrap`: a confidence interval for the difference of two models
  evaluated on the same users.

Notebook 09: the pieces of a BERT4Rec (Sun et al., CIKM 2019), one function each:
:func:`embed_sequence`, :func:`cloze_mask`, :func:`masked_cross_entropy`,
:func:`train_masked_epoch`, :func:`mask_appended_inputs`, :func:`ndcg_from_scores`, and
:func:`synthetic_sequences`, a toy task with a strong sequential signal on which a small
model beats popularity within seconds.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .models.bert4rec import mask_appended_inputs  # re-exported: the lab uses the model's own inference input
from .prep import PAD

# ----------------------------------------------------------------------------- notebook 08


def tie_rank(scores, target, candidates=None, ties: str = "pessimistic") -> np.ndarray:
    """0-based rank of each row's ``target`` among that row's candidate items.

    ``scores``: (B, n) scores; ``target``: (B,) column of the held-out item in each row;
    ``candidates``: (B, n) bool, the items it competes with (default: every other
    column; the target itself never counts). The rank is the number of candidates
    that score **higher**, plus, for the candidates that score the **same**: all of
    them (``"pessimistic"``), none (``"optimistic"``) or half (``"average"``).
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
    ts = s[rows, t][:, None]
    higher = ((s > ts) & cand).sum(1)
    equal = ((s == ts) & cand).sum(1)
    if ties == "pessimistic":
        return (higher + equal).astype(float)
    if ties == "optimistic":
        return higher.astype(float)
    if ties == "average":
        return higher + 0.5 * equal
    raise ValueError(f"ties must be 'pessimistic', 'optimistic' or 'average', got {ties!r}")


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


def paired_bootstrap(a, b, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its percentile bootstrap interval, resampling **users** (pairs) jointly.

    ``a`` and ``b`` are per-user metrics of two models on the same users, in the same
    order. An interval that excludes 0 says the difference is unlikely to be noise.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D per-user metrics of the same users, got shapes {a.shape}, {b.shape}")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    d = a - b
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    return float(d.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


# ----------------------------------------------------------------------------- notebook 09


def synthetic_sequences(n_users: int = 400, n_items: int = 100, length: int = 20, n_steps: int = 3,
                        p_follow: float = 0.85, seed: int = 0) -> pd.DataFrame:
    """A toy sequential task: each user walks around a ring of items with a personal stride.

    User ``u`` draws a stride :math:`s_u \\in \\{1, ..., n\\_steps\\}` and a random first
    item; each next item is :math:`((i + s_u - 1) \\bmod n) + 1` (IDs ``1..n``) with
    probability ``p_follow``, else a uniformly random item. Popularity is flat, so the
    popularity baseline is close to random (HR@10 about 10 / n_items), while a model
    that reads the last two items predicts the next one most of the time. Returns a
    frame with columns user, item, rating (1.0), timestamp (the position), IDs 1-based.
    """
    if n_items < 2 or length < 3 or n_users < 1 or n_steps < 1:
        raise ValueError("need n_items >= 2, length >= 3, n_users >= 1 and n_steps >= 1")
    if not 0 <= p_follow <= 1:
        raise ValueError("p_follow must be in [0, 1]")
    rng = np.random.default_rng(seed)
    stride = rng.integers(1, n_steps + 1, size=n_users)
    items = np.empty((n_users, length), dtype=np.int64)
    items[:, 0] = rng.integers(0, n_items, size=n_users)
    follow = rng.random((n_users, length)) < p_follow
    jump = rng.integers(0, n_items, size=(n_users, length))
    for t in range(1, length):
        items[:, t] = np.where(follow[:, t], (items[:, t - 1] + stride) % n_items, jump[:, t])
    return pd.DataFrame({
        "user": np.repeat(np.arange(1, n_users + 1), length),
        "item": items.reshape(-1) + 1,
        "rating": np.float32(1.0),
        "timestamp": np.tile(np.arange(length, dtype=np.int64), n_users),
    })


def embed_sequence(seq: torch.Tensor, item_emb: torch.nn.Embedding, pos_emb: torch.nn.Embedding) -> torch.Tensor:
    r"""Item plus position embeddings of left-padded item IDs ``seq`` (B, L), padding rows zero.

    .. math:: x_{b,t} = E[s_{b,t}] + P[p_t]\ \text{ if } s_{b,t} \ne 0 \text{ else } 0

    Positions count from the **right**: with ``max_len = pos_emb.num_embeddings``, column
    ``t`` of a length-``L`` batch gets position ``max_len - L + t``, so the most recent
    item always has position ``max_len - 1``, however long the history.
    """
    if seq.ndim != 2:
        raise ValueError(f"seq must be (batch, length), got shape {tuple(seq.shape)}")
    L, max_len = seq.shape[1], pos_emb.num_embeddings
    if L > max_len:
        raise ValueError(f"sequence length {L} exceeds the {max_len} positions of pos_emb")
    pos = torch.arange(max_len - L, max_len, device=seq.device)
    x = item_emb(seq) + pos_emb(pos)[None]
    return x * (seq != PAD)[..., None].to(x.dtype)


def cloze_mask(batch: torch.Tensor, mask_prob: float, mask_token: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT4Rec's Cloze task: hide random items and ask the model to fill them in.

    Every non-padding position of ``batch`` (B, L) is masked independently with
    probability ``mask_prob``; a row that has items but drew no mask gets its **last**
    (most recent) item masked, so every row teaches something and training also sees
    the situation of inference (a [MASK] after the history). Returns ``(inputs, labels)``:
    ``inputs`` is ``batch`` with ``mask_token`` at the masked positions, ``labels`` holds
    the hidden item there and 0 elsewhere. Padding is never masked. Random numbers
    come from ``generator`` (a CPU generator) or torch's global RNG.
    """
    if not 0 < mask_prob <= 1:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
    if batch.ndim != 2:
        raise ValueError(f"batch must be (B, L), got shape {tuple(batch.shape)}")
    items = batch != PAD
    draw = torch.rand(batch.shape, generator=generator).to(batch.device)
    masked = items & (draw < mask_prob)
    empty = items.any(1) & ~masked.any(1)
    L = batch.shape[1]
    last = L - 1 - torch.flip(items, dims=[1]).int().argmax(1)  # column of each row's last item
    masked[empty, last[empty]] = True
    inputs = batch.masked_fill(masked, mask_token)
    labels = torch.where(masked, batch, torch.zeros_like(batch))
    return inputs, labels


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Mean cross-entropy over the masked positions only (``labels != 0``).

    .. math:: \mathcal{L} = -\frac{1}{|M|} \sum_{(b,t) \in M} \log \operatorname{softmax}(z_{b,t})_{y_{b,t}}

    ``logits``: (B, L, V), ``labels``: (B, L) with 0 where nothing is to be predicted.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    keep = labels != PAD
    if not keep.any():
        raise ValueError("no masked position in the batch (labels are all 0)")
    return F.cross_entropy(logits[keep].float(), labels[keep])


def train_masked_epoch(model, data: torch.Tensor, optimizer, batch_size: int = 64, mask_prob: float = 0.2,
                       mask_token: int | None = None, generator: torch.Generator | None = None,
                       grad_clip: float | None = 1.0) -> float:
    """One epoch of Cloze training; returns the mean loss over batches.

    ``model(inputs)`` must return logits (B, L, V) with ``V > n_items``; ``data`` (N, L)
    holds left-padded training sequences; the mask token defaults to
    ``model.mask_token``. Rows are shuffled with ``generator``.
    """
    mask_token = getattr(model, "mask_token") if mask_token is None else mask_token
    device = next(model.parameters()).device
    model.train()
    perm = torch.randperm(len(data), generator=generator)
    losses = []
    for start in range(0, len(data), batch_size):
        batch = data[perm[start:start + batch_size]]
        inputs, labels = cloze_mask(batch, mask_prob, mask_token, generator)
        loss = masked_cross_entropy(model(inputs.to(device)), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))




def ndcg_from_scores(scores, targets, seen=None, k: int = 10) -> torch.Tensor:
    r"""Per-row NDCG@k of one held-out item, full ranking, seen items excluded, ties against the model.

    ``scores``: (B, n + 1) (column 0 is padding and never a candidate); ``targets``: (B,)
    item IDs; ``seen``: (B, n + 1) bool, items excluded from the ranking. The target's
    rank :math:`r` counts candidates scoring at least as high; NDCG@k is
    :math:`1/\log_2(r + 2)` if :math:`r < k`, else 0. A target that is itself in ``seen``
    (a repeat of an earlier item) is excluded like every seen item: it scores 0, as in
    :func:`course_lib.metrics.evaluate` and the lists ``recommend`` serves.
    """
    s = (scores if isinstance(scores, torch.Tensor) else torch.from_numpy(np.array(scores))).detach().float().cpu()
    t = torch.as_tensor(np.array(targets, dtype=np.int64)).reshape(-1)
    if s.ndim != 2 or len(t) != len(s):
        raise ValueError(f"scores must be (B, n + 1) and targets (B,), got {tuple(s.shape)} and {tuple(t.shape)}")
    cand = torch.ones_like(s, dtype=torch.bool)
    if seen is not None:
        cand &= ~torch.as_tensor(seen, dtype=torch.bool).cpu()
    cand[:, 0] = False
    rows = torch.arange(len(s))
    reachable = cand[rows, t].clone()  # False: the target is padding or was seen, so no list holds it
    cand[rows, t] = False
    rank = ((s >= s[rows, t][:, None]) & cand).sum(1).float()
    return torch.where(reachable & (rank < k), 1.0 / torch.log2(rank + 2), torch.zeros_like(rank))


__all__ = [
    "tie_rank", "sampled_hit_probability", "expected_sampled_metrics", "paired_bootstrap",
    "synthetic_sequences", "embed_sequence", "cloze_mask", "masked_cross_entropy", "train_masked_epoch",
    "mask_appended_inputs", "ndcg_from_scores",
]
