r"""BERT4Rec: a bidirectional Transformer trained to fill in masked items (Sun et al., CIKM 2019).

SASRec reads a history left to right and predicts the next item. BERT4Rec instead
hides a random fraction of the items behind a special ``[MASK]`` token and asks the
model to recover them from **both** sides, like BERT's cloze task:

.. math::

   \mathcal{L} = -\frac{1}{|\mathcal{M}|} \sum_{(b, t) \in \mathcal{M}}
   \log \frac{\exp(h_{b,t}^\top e_{s_{b,t}})}{\sum_{j=1}^{n} \exp(h_{b,t}^\top e_j)},

where :math:`\mathcal{M}` is the set of masked positions: the loss is computed **only**
there (every other position is an input, not a question).

Inference trick: to predict the *next* item, append ``[MASK]`` to the history and read
the model's answer at that last position. Training therefore also includes rows where
only the last item is masked (``last_item_prob``), as in the original paper, so the
model practises exactly the question it is asked at inference.

The network is SASRec's (:mod:`course_lib.models.sasrec`: the same embeddings, blocks,
tied output layer and interface); only the attention mask (none of the future is hidden
when ``bidirectional``), the vocabulary (one more token, ``[MASK] = n_items + 1``), the
loss and the scoring differ. Setting ``bidirectional=False`` gives the same model with
a causal mask, to compare the two on the same data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..prep import PAD, pad_sequences
from .sasrec import SASRec, SASRecConfig, _as_batch


def mask_items(seq: torch.Tensor, mask_token: int, mask_prob: float,
               generator: torch.Generator | None = None, ensure_one: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT4Rec's Cloze task: hide each non-padding item of ``seq`` with probability ``mask_prob``.

    ``seq``: (B, L) int64 item IDs, left-padded with 0. Returns ``(inputs, labels)``, both
    like ``seq``: ``inputs`` has ``mask_token`` at the masked positions and ``seq`` elsewhere;
    ``labels`` has the original item at the masked positions and 0 (ignored) elsewhere.
    Padding is never masked. With ``ensure_one``, a row that has items but drew no mask gets
    its **last** (most recent) item masked, so every row asks at least one question, the
    one asked at inference. Random numbers come from ``generator`` (a CPU generator) or
    torch's global generator (``seed_everything`` makes it reproducible).
    """
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must lie in [0, 1], got {mask_prob}")
    if seq.ndim != 2:
        raise ValueError(f"seq must be (B, L), got shape {tuple(seq.shape)}")
    items = seq != PAD
    draw = torch.rand(seq.shape, generator=generator, device="cpu").to(seq.device)
    masked = (draw < mask_prob) & items
    if ensure_one:
        empty = items.any(1) & ~masked.any(1)
        last = seq.shape[1] - 1 - torch.flip(items, dims=[1]).int().argmax(1)  # column of each row's last item
        masked[empty, last[empty]] = True
    inputs = torch.where(masked, torch.full_like(seq, mask_token), seq)
    labels = torch.where(masked, seq, torch.zeros_like(seq))
    return inputs, labels


def mask_appended_inputs(histories: Sequence[np.ndarray], max_len: int, mask_token: int) -> torch.Tensor:
    """What BERT4Rec reads at inference: each history followed by [MASK], last ``max_len`` tokens, left-padded."""
    seqs = [np.append(np.asarray(h, dtype=np.int64), mask_token) for h in histories]
    return torch.from_numpy(pad_sequences(seqs, max_len, side="left"))


@dataclass
class BERT4RecConfig(SASRecConfig):
    """:class:`SASRecConfig` plus the masking (defaults, with ``BERT4Rec.train_defaults``: chosen on the
    validation split of MovieLens-100k)."""
    n_heads: int = 2
    dropout: float = 0.2
    mask_prob: float = 0.2        # fraction of items hidden behind [MASK] in training
    last_item_prob: float = 0.1   # fraction of rows where only the last item is masked
    bidirectional: bool = True    # False: the same model with a causal attention mask

    def __post_init__(self):
        super().__post_init__()
        for name in ("mask_prob", "last_item_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.max_len < 2:
            raise ValueError("BERT4Rec needs max_len >= 2 (at least one item and the [MASK] token)")


class BERT4Rec(SASRec):
    """Masked-item Transformer; ``score`` appends ``[MASK]`` to each history and reads its logits."""

    name = "BERT4Rec"
    config_class = BERT4RecConfig
    # chosen on the validation split (benchmarks/results/sequential_search_bert4rec.md): a higher rate that
    # decays linearly to 0 over the 80 epochs; BERT4Rec learns from 20% of the positions per epoch, so it
    # needs several times SASRec's epochs (Petrov & Macdonald, RecSys 2022)
    train_defaults = dict(epochs=80, patience=20, lr=4e-3, batch_size=64, schedule="linear", warmup=0.05)

    def __init__(self, n_items: int, config: BERT4RecConfig | None = None, **overrides):
        super().__init__(n_items, config, **overrides)
        self.causal = not self.config.bidirectional

    @property
    def n_vocab(self) -> int:
        return self.n_items + 2  # padding, items, [MASK]

    @property
    def mask_token(self) -> int:
        return self.n_items + 1

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the whole catalog at the masked positions only.

        ``batch``: (B, L + 1) left-padded item IDs, of which the last ``min(L + 1, max_len)``
        are used. Every row with an item gets at least one mask (its last item, if the
        random draw hid none).
        """
        batch = _as_batch(batch, self.device)
        seq = batch[:, -self.config.max_len:]
        inputs, labels = mask_items(seq, self.mask_token, self.config.mask_prob, ensure_one=True)
        # some rows: hide only the last item (the question asked at inference)
        last_only = (torch.rand(len(seq)).to(seq.device) < self.config.last_item_prob) & (seq[:, -1] != PAD)
        inputs = torch.where(last_only[:, None], seq, inputs)
        labels = torch.where(last_only[:, None], torch.zeros_like(labels), labels)
        inputs[last_only, -1] = self.mask_token
        labels[last_only, -1] = seq[last_only, -1]
        keep = labels != PAD
        if not keep.any():
            raise ValueError("the batch holds no items to mask (every row is padding)")
        h = self(inputs)
        return F.cross_entropy(self.logits(h[keep]), labels[keep])

    def _padded(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Last ``max_len - 1`` items of each history followed by ``[MASK]``, left-padded."""
        return mask_appended_inputs(histories, self.config.max_len, self.mask_token).to(self.device)
