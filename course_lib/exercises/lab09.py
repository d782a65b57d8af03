r"""The references of notebook 09's exercises (the BERT4Rec lab), built on the library.

The lab asks students to write a small BERT4Rec piece by piece; the autograder compares
each piece with the function here. Each is a thin, readable layer over the library's own
code, so the lab and the library cannot drift apart:

* :func:`embed_sequence`: :func:`course_lib.models.sasrec.embed_positions` without SASRec's
  :math:`\sqrt{d}` scale (the lab's simpler model);
* :func:`cloze_mask`: :func:`course_lib.models.bert4rec.mask_items` with ``ensure_one``;
* :func:`masked_cross_entropy` and :func:`train_masked_epoch`: the loss and the epoch the
  students write. The library's BERT4Rec computes the same loss inside ``BERT4Rec.loss``,
  and trains with :func:`course_lib.train.train`; this loop exists for the exercise only;
* :func:`ndcg_from_scores`: per-row NDCG@k from :func:`course_lib.metrics.rank_among_candidates`,
  the evaluator's ranking rule;
* :func:`mask_appended_inputs`: BERT4Rec's inference input (re-exported from the model).

The toy task of the lab is :func:`course_lib.data.synthetic_sequences`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import rank_among_candidates
from ..models.bert4rec import mask_appended_inputs, mask_items
from ..models.sasrec import embed_positions
from ..prep import PAD


def embed_sequence(seq: torch.Tensor, item_emb: torch.nn.Embedding, pos_emb: torch.nn.Embedding) -> torch.Tensor:
    r"""Item plus position embeddings of left-padded item IDs ``seq`` (B, L), padding rows zero.

    .. math:: x_{b,t} = E[s_{b,t}] + P[p_t]\ \text{ if } s_{b,t} \ne 0 \text{ else } 0

    Positions count from the right (see :func:`course_lib.models.sasrec.embed_positions`).
    """
    return embed_positions(seq, item_emb, pos_emb, scale=1.0)


def cloze_mask(batch: torch.Tensor, mask_prob: float, mask_token: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide random items (probability ``mask_prob``); a row that drew none gets its last item hidden.

    Returns ``(inputs, labels)`` as :func:`course_lib.models.bert4rec.mask_items` with
    ``ensure_one=True`` does; ``mask_prob`` must lie in (0, 1].
    """
    if not 0 < mask_prob <= 1:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
    return mask_items(batch, mask_token, mask_prob, generator, ensure_one=True)


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
    rank = rank_among_candidates(s, s[rows, t][:, None], cand)[:, 0]
    return torch.where(reachable & (rank < k), 1.0 / torch.log2(rank + 2), torch.zeros_like(rank))


__all__ = ["embed_sequence", "cloze_mask", "masked_cross_entropy", "train_masked_epoch", "mask_appended_inputs",
           "ndcg_from_scores"]
