r"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A user's history is a sentence whose words are items; a small causal Transformer
reads it left to right and, at every position, predicts the next item.

Reading order of this file (nanoGPT's ``model.py`` is the model for its shape):

1. :func:`causal_mask` and :func:`scaled_dot_product_attention`: the two pieces the
   notebook asks you to write;
2. :class:`SelfAttention`, :class:`TransformerBlock`: multi-head attention and a
   pre-LayerNorm block (attention, then a position-wise feed-forward network);
3. :class:`SASRecConfig`, :class:`SASRec`: embeddings, blocks, the loss, the scores.

Attention of a query position :math:`i` over key positions :math:`j`:

.. math::

   \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}} + M\right) V,
   \qquad M_{ij} = \begin{cases} 0 & j \le i \text{ and } j \text{ is an item} \\ -\infty & \text{otherwise} \end{cases}

The loss is the cross-entropy over the **whole catalog** at every non-padding
position (Klenitskiy & Vasilev, RecSys 2023, showed that this, rather than the original
one-negative binary loss, is what makes SASRec strong):

.. math::

   \mathcal{L} = -\frac{1}{|T|} \sum_{(b, t) \in T} \log \frac{\exp(h_{b,t}^\top e_{s_{b,t+1}})}{\sum_{j=1}^{n} \exp(h_{b,t}^\top e_j)}

with the output layer tied to the item embeddings :math:`e_j`.

Conventions (shared with every sequential model of the course): item IDs are ``1..n``,
0 is padding, sequences are **left**-padded so the most recent item is the last column.
Positions are counted from the right end, so the most recent item always gets the same
position embedding, however long the history is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..prep import PAD, pad_sequences
from .neural import NeuralRecommender

# ----------------------------------------------------------------------------- attention


def causal_mask(length: int, device=None) -> torch.Tensor:
    """``(length, length)`` bool mask, ``True`` where query ``i`` may look at key ``j`` (``j <= i``).

    Same convention as ``torch.nn.functional.scaled_dot_product_attention``'s bool
    ``attn_mask``: ``True`` takes part in attention.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, dropout: float = 0.0,
                                 training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``softmax(q kᵀ / sqrt(d) + M) v`` and the attention weights.

    ``q``: (..., L, d), ``k``/``v``: (..., S, d); ``mask``: bool, broadcastable to
    (..., L, S), ``True`` = may attend. Returns ``(output (..., L, d_v), weights (..., L, S))``;
    each row of ``weights`` sums to 1 over the keys it may see. Every query must be
    allowed at least one key (else its softmax is undefined).
    """
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    attn = F.dropout(weights, p=dropout, training=training) if dropout > 0 else weights
    return attn @ v, weights


def padding_attention_mask(seq: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """``(B, 1, L, L)`` bool mask for a batch of left-padded item IDs ``seq`` (B, L).

    A query may look at keys that are items (not padding) and, if ``causal``, not in its
    future. Every position may also look at itself, so that rows of padding (which no
    loss or score ever reads) keep a well-defined softmax instead of NaN.
    """
    L = seq.shape[1]
    keys = (seq != PAD)[:, None, None, :]  # (B, 1, 1, L)
    eye = torch.eye(L, dtype=torch.bool, device=seq.device)
    allowed = keys | eye
    if causal:
        allowed = allowed & causal_mask(L, seq.device)
    return allowed


def embed_positions(seq: torch.Tensor, item_emb: nn.Embedding, pos_emb: nn.Embedding,
                    scale: float = 1.0) -> torch.Tensor:
    r"""Item plus position embeddings of left-padded item IDs ``seq`` (B, L); padding rows are zero.

    .. math:: x_{b,t} = \text{scale} \cdot E[s_{b,t}] + P[p_t]\ \text{ if } s_{b,t} \ne 0 \text{ else } 0

    Positions count from the **right**: with ``max_len = pos_emb.num_embeddings``, column
    ``t`` of a length-``L`` batch gets position ``max_len - L + t``, so the most recent item
    always has position ``max_len - 1``, however long the history. SASRec scales the item
    embeddings by :math:`\sqrt{d}` (as the Transformer does); notebook 09's lab model uses
    ``scale = 1``.
    """
    if seq.ndim != 2:
        raise ValueError(f"seq must be (batch, length), got shape {tuple(seq.shape)}")
    L, max_len = seq.shape[1], pos_emb.num_embeddings
    if L > max_len:
        raise ValueError(f"sequence length {L} exceeds the {max_len} positions of pos_emb; "
                         "keep the last max_len items (course_lib.prep.pad_sequences does)")
    pos = torch.arange(max_len - L, max_len, device=seq.device)
    x = item_emb(seq) * scale + pos_emb(pos)[None]
    return x * (seq != PAD)[..., None].to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention: project to queries, keys and values, attend per head, merge."""

    def __init__(self, hidden: int, n_heads: int, dropout: float):
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, L, H = x.shape
        q, k, v = self.qkv(x).split(H, dim=2)
        # (B, L, H) -> (B, heads, L, H / heads)
        q, k, v = (t.view(B, L, self.n_heads, H // self.n_heads).transpose(1, 2) for t in (q, k, v))
        out, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout, self.training)
        out = out.transpose(1, 2).reshape(B, L, H)
        return self.proj(out), weights


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + Attn(LN(x))``, then ``x + FFN(LN(x))`` (GELU; width ``ffn``, default 4·hidden)."""

    def __init__(self, hidden: int, n_heads: int, dropout: float, ffn: int | None = None):
        super().__init__()
        ffn = ffn or 4 * hidden
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, n_heads, dropout)
        self.ln2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, weights = self.attn(self.ln1(x), mask)
        x = x + self.drop(a)
        x = x + self.drop(self.ffn(self.ln2(x)))
        return x, weights


# ----------------------------------------------------------------------------- model


@dataclass
class SASRecConfig:
    """Hyper-parameters of :class:`SASRec` (defaults: good on MovieLens-100k)."""
    max_len: int = 50       # longest history the model reads (older items are dropped)
    hidden: int = 64        # embedding and model width
    n_blocks: int = 2       # Transformer blocks
    n_heads: int = 1        # attention heads per block
    dropout: float = 0.3    # on embeddings, attention weights and block outputs
    ffn: int | None = None  # feed-forward width (None: 4 * hidden)

    def __post_init__(self):
        if min(self.max_len, self.hidden, self.n_blocks, self.n_heads) < 1:
            raise ValueError("max_len, hidden, n_blocks and n_heads must be >= 1")
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


def _as_batch(seq, device) -> torch.Tensor:
    """Item IDs as a (B, L) int64 tensor on ``device`` (a 1-D input becomes one row)."""
    t = seq if isinstance(seq, torch.Tensor) else torch.from_numpy(np.array(seq))  # a copy: input may be read-only
    if t.ndim == 1:
        t = t[None, :]
    if t.ndim != 2:
        raise ValueError(f"expected item IDs of shape (L,) or (B, L), got {tuple(t.shape)}")
    if t.dtype.is_floating_point:
        raise TypeError("item IDs must be integers")
    return t.long().to(device)


class SASRec(NeuralRecommender):
    """Causal Transformer over item sequences; ``score`` gives next-item logits for every item.

    >>> model = SASRec(n_items=1682, hidden=64)          # or SASRec(1682, SASRecConfig(hidden=64))
    >>> model.fit(split, epochs=20)                     # course_lib.train.train: full-catalog cross-entropy
    >>> model.score(users, histories).shape             # (len(users), 1683)
    """

    name = "SASRec"
    causal = True
    config_class = SASRecConfig
    train_defaults = dict(epochs=50, patience=5, lr=1e-3, batch_size=128)

    def __init__(self, n_items: int, config: SASRecConfig | None = None, **overrides):
        super().__init__()
        config = self._configure(config, overrides)
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items, self.config = int(n_items), config
        H = config.hidden
        self.item_emb = nn.Embedding(self.n_vocab, H, padding_idx=PAD)
        self.pos_emb = nn.Embedding(config.max_len, H)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(H, config.n_heads, config.dropout, config.ffn)
                                    for _ in range(config.n_blocks))
        self.ln_f = nn.LayerNorm(H)
        self.apply(self._init_weights)

    def reset_parameters(self) -> None:
        """Draw fresh initial weights, in the constructor's order: after ``torch.manual_seed(s)``
        the model equals one built right after ``torch.manual_seed(s)`` (what :func:`course_lib.train.train`
        relies on to make its ``seed`` cover initialisation)."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        self.apply(self._init_weights)

    @property
    def n_vocab(self) -> int:
        """Rows of the item table: padding + items (BERT4Rec adds a [MASK] token)."""
        return self.n_items + 1

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    # -- the network ---------------------------------------------------------------------

    def _check_ids(self, seq: torch.Tensor) -> None:
        """Item IDs in range, for :meth:`attention_weights` (``score`` checks its histories itself). Not
        done on every training step: ``int(seq.max())`` waits for the device, a host synchronisation."""
        if seq.numel() and (int(seq.min()) < 0 or int(seq.max()) >= self.n_vocab):
            raise ValueError(f"item IDs must lie in 0..{self.n_vocab - 1} (0 = padding), "
                             f"got {int(seq.min())}..{int(seq.max())}: encode them with course_lib.prep")

    def embed(self, seq: torch.Tensor) -> torch.Tensor:
        """Item embedding (scaled by sqrt(hidden)) + position embedding (:func:`embed_positions`), dropout; padding rows 0."""
        return self.drop(embed_positions(seq, self.item_emb, self.pos_emb, math.sqrt(self.config.hidden)))

    def forward(self, seq: torch.Tensor, return_attention: bool = False):
        """Hidden states (B, L, hidden) for left-padded item IDs ``seq`` (B, L <= max_len).

        With ``return_attention=True`` also the attention weights, a tensor
        (n_blocks, B, n_heads, L, L).
        """
        if seq.shape[1] > self.config.max_len:
            raise ValueError(f"sequence length {seq.shape[1]} exceeds config.max_len={self.config.max_len}; "
                             "keep the last max_len items (course_lib.prep.pad_sequences does)")
        mask = padding_attention_mask(seq, causal=self.causal)
        x = self.embed(seq)
        weights = []
        for block in self.blocks:
            x, w = block(x, mask)
            weights.append(w)
        x = self.ln_f(x)
        return (x, torch.stack(weights)) if return_attention else x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of items 0..n_items (tied output layer: dot product with the item embeddings)."""
        return hidden @ self.item_emb.weight[: self.n_items + 1].T

    # -- training --------------------------------------------------------------------------

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Next-item cross-entropy over the whole catalog, averaged over non-padding targets.

        ``batch``: (B, L + 1) left-padded item IDs with L <= max_len; inputs are
        ``batch[:, :-1]``, targets ``batch[:, 1:]``. Positions whose target is padding, or
        whose input is padding (nothing to predict from), are ignored.
        """
        batch = _as_batch(batch, self.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        h = self(inputs)
        keep = (targets != PAD) & (inputs != PAD)
        if not keep.any():
            raise ValueError("the batch has no target items (every row is padding or a single item)")
        return F.cross_entropy(self.logits(h[keep]), targets[keep])

    # -- inference --------------------------------------------------------------------------

    def _padded(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(pad_sequences(histories, self.config.max_len)).to(self.device)

    def next_item_scores(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Next-item logits (len(histories), n_items + 1): the last position's hidden state times every item."""
        return self.logits(self(self._padded(histories))[:, -1])

    def attention_weights(self, seq) -> torch.Tensor:
        """Attention weights (n_blocks, B, n_heads, L, L) for item IDs ``seq`` ((L,) or (B, L)).

        Row ``i`` of a (L, L) matrix is how much position ``i`` looks at each position ``j``
        (it sums to 1; causal models put 0 on ``j > i``). Evaluation mode, no gradients.
        A sequence longer than ``max_len`` is cut to its last ``max_len`` items.
        """
        seq = _as_batch(seq, self.device)[:, -self.config.max_len:]
        self._check_ids(seq)
        with self.evaluating():
            return self(seq, return_attention=True)[1].cpu()
