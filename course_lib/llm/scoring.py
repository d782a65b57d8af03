"""Scores from a language model's logits: the pieces every LLM lesson shares.

* :func:`answer_token_ids`: the token IDs of answer words ("Yes"/"No", "related"/
  "unrelated"), checked to be single tokens, with or without a leading space;
* :func:`verbalizer_probs`: a softmax restricted to the answer words' logits (Prompt4NR's
  verbalizer, TALLRec's P(Yes));
* :func:`ensemble`: average several templates' probabilities (Prompt4NR's ensembles);
* :func:`last_token_logits`: one batched forward pass with left padding, the next-token
  logits of every prompt;
* :func:`sequence_logprob`: the log-likelihood of continuations given prompts (ranking
  candidates by likelihood);
* :func:`auc`: ROC AUC with ties counted half (the click-task metric).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F


def answer_token_ids(tokenizer, words: Sequence[str], leading_space: bool = False) -> list[int]:
    """One token ID per answer word; a word that is not a single token raises a ValueError naming it."""
    ids = []
    for w in words:
        text = (" " + w) if leading_space else w
        toks = tokenizer.encode(text, add_special_tokens=False)
        if len(toks) != 1:
            raise ValueError(f"answer word {text!r} is {len(toks)} tokens {toks}, not one: choose another word "
                             "or set leading_space to match how it follows the prompt")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"answer words {list(words)} share a token")
    return ids


def verbalizer_probs(logits, answer_ids: Sequence[int]) -> np.ndarray:
    """``(N, len(answer_ids))`` probabilities: softmax over the answer words' logits only.

    ``logits`` is ``(N, vocab)`` (or ``(vocab,)``), the scores at the answer position.
    Row ``r`` gives P(answer word j | prompt r, the answer is one of the words)."""
    t = torch.as_tensor(logits).float()
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2:
        raise ValueError(f"logits must be (N, vocab) or (vocab,), got shape {tuple(t.shape)}")
    idx = torch.as_tensor(list(answer_ids), dtype=torch.long)
    if len(idx) < 2:
        raise ValueError("a verbalizer needs at least two answer words")
    if int(idx.max()) >= t.shape[1] or int(idx.min()) < 0:
        raise ValueError(f"answer IDs {idx.tolist()} outside the vocabulary of size {t.shape[1]}")
    return torch.softmax(t[:, idx], dim=1).numpy()


def ensemble(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of several templates' probabilities for the same examples (equal weights by default)."""
    arrs = [np.asarray(p, dtype=float) for p in probs]
    if not arrs:
        raise ValueError("nothing to ensemble")
    if any(a.shape != arrs[0].shape for a in arrs):
        raise ValueError(f"shapes differ: {[a.shape for a in arrs]}")
    w = np.ones(len(arrs)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(arrs) or (w < 0).any() or w.sum() == 0:
        raise ValueError("weights must be one non-negative number per template, not all zero")
    return np.tensordot(w / w.sum(), np.stack(arrs), axes=1)


@torch.no_grad()
def last_token_logits(lm, prompts: Sequence[str], batch_size: int = 8, max_length: int = 1024) -> torch.Tensor:
    """``(len(prompts), vocab)`` next-token logits after each prompt (float32, on the CPU).

    Batched with left padding, so position -1 is every prompt's last real token."""
    tok, model = lm.tokenizer, lm.model
    if tok.padding_side != "left":
        raise ValueError("last-token scoring needs tokenizer.padding_side == 'left'")
    out = []
    for s in range(0, len(prompts), batch_size):
        batch = tok(list(prompts[s: s + batch_size]), return_tensors="pt", padding=True, truncation=True,
                    max_length=max_length, add_special_tokens=False).to(lm.device)
        logits = model(**batch).logits[:, -1, :]
        out.append(logits.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def sequence_logprob(lm, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 8,
                     mean: bool = False) -> np.ndarray:
    """log P(continuation | prompt) for each pair (summed over the continuation's tokens, or averaged)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    tok, model = lm.tokenizer, lm.model
    scores = []
    for s in range(0, len(prompts), batch_size):
        ps, cs = prompts[s: s + batch_size], continuations[s: s + batch_size]
        p_ids = [tok.encode(p, add_special_tokens=False) for p in ps]
        c_ids = [tok.encode(c, add_special_tokens=False) for c in cs]
        if any(len(c) == 0 for c in c_ids):
            raise ValueError("an empty continuation has no likelihood")
        seqs = [p + c for p, c in zip(p_ids, c_ids)]
        width = max(map(len, seqs))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, q in enumerate(seqs):  # left padding
            ids[r, width - len(q):] = torch.tensor(q)
            mask[r, width - len(q):] = 1
        logits = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits.float().cpu()
        logp = F.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None]).squeeze(2)
        for r, c in enumerate(c_ids):
            lp = logp[r, width - 1 - len(c):]
            scores.append(float(lp.mean() if mean else lp.sum()))
    return np.asarray(scores)


def auc(labels, scores) -> float:
    """ROC AUC: the probability that a random positive outscores a random negative (ties count half)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("AUC needs at least one positive and one negative")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))
