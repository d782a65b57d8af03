r"""GRU4Rec: a recurrent network reads the history, item by item (Hidasi et al., ICLR 2016).

Each item ID is embedded, :math:`x_t = E[i_t]`, and a GRU updates a hidden state that
summarises everything read so far (PyTorch's gate convention):

.. math::

   r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
   z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
   n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
   h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}, \qquad h_0 = 0

The scores of every item for the next step are one matrix product,
:math:`s_t = W_{out} h_t + b_{out}` (``n_items + 1`` logits, column 0 = padding).

Two losses over those scores (``GRU4RecConfig.loss``):

* ``"ce"``: full-catalog cross-entropy, :math:`-\log \operatorname{softmax}(s_t)_{i_{t+1}}`;
* ``"bpr"``: Bayesian personalised ranking against ``n_negatives`` items drawn
  uniformly, :math:`-\frac{1}{N}\sum_{j} \log \sigma(s_{t, i_{t+1}} - s_{t, j})`.

Training comes in two flavours, with the same weights and the same trainer
(:func:`course_lib.train.train`, or ``model.fit(split, ...)``): padded windows
(``loss(batch)``, the default), and session-parallel mini-batches
(``batching="session_parallel"``: :func:`course_lib.seqdata.session_parallel_batches`,
``step`` and ``session_parallel_loss``), the scheme of the original paper. Hidasi & Czapp
(RecSys 2023) found several third-party GRU4Recs badly wrong; the unit tests check
this one against a hand-computed GRU on a tiny case and check that ``loss`` and
``score`` agree position by position.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..prep import pad_sequences
from .neural import NeuralRecommender


@dataclass
class GRU4RecConfig:
    """Hyper-parameters of :class:`GRU4Rec`; the defaults (and ``GRU4Rec.train_defaults``) won a search on
    the validation split of ml-100k (``benchmarks/sequential_search.py``, results in ``benchmarks/results/``)."""
    max_len: int = 50          # items of history read (the most recent ones)
    emb_dim: int = 128         # item embedding size
    hidden: int = 64           # GRU hidden state size
    layers: int = 1
    dropout: float = 0.4       # on the embeddings and on the hidden states
    loss: str = "ce"           # "ce" (full softmax) or "bpr" (sampled negatives)
    n_negatives: int = 64      # BPR only

    def __post_init__(self):
        if self.loss not in ("ce", "bpr"):
            raise ValueError(f"loss must be 'ce' or 'bpr', got {self.loss!r}")
        if min(self.max_len, self.emb_dim, self.hidden, self.layers, self.n_negatives) < 1:
            raise ValueError("max_len, emb_dim, hidden, layers and n_negatives must be >= 1")


def right_align(seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each left-padded row's items to the front: ``[0 0 a b c] -> [a b c 0 0]``; also returns lengths."""
    L = seqs.shape[1]
    lengths = (seqs != 0).sum(1)
    idx = (torch.arange(L, device=seqs.device)[None, :] + (L - lengths)[:, None]) % L
    return seqs.gather(1, idx), lengths


def _full_precision(device: torch.device):
    """The GRU runs in float32 even under bf16 autocast: cuDNN supports bf16 RNNs only in recent
    versions, and the recurrence is cheap next to the output layer, which autocast still speeds up."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", enabled=False)
    return contextlib.nullcontext()


class GRU4Rec(NeuralRecommender):
    """A GRU over the item sequence; ``score`` reads the hidden state after each history's last item.

    >>> model = GRU4Rec(n_items=1682, hidden=128)          # or GRU4Rec(1682, GRU4RecConfig(hidden=128))
    >>> model.fit(split, epochs=20)                         # padded windows (course_lib.train.train)
    >>> model.fit(split, batching="session_parallel")       # the original paper's mini-batches
    """

    name = "GRU4Rec"
    config_class = GRU4RecConfig
    train_defaults = dict(epochs=30, patience=5, lr=1e-2, batch_size=128)

    def __init__(self, n_items: int, config: GRU4RecConfig | None = None, **overrides):
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items, self.config = int(n_items), self._configure(config, overrides)
        c = self.config
        self.item_emb = nn.Embedding(n_items + 1, c.emb_dim, padding_idx=0)
        self.drop = nn.Dropout(c.dropout)
        self.gru = nn.GRU(c.emb_dim, c.hidden, num_layers=c.layers, batch_first=True,
                          dropout=c.dropout if c.layers > 1 else 0.0)
        self.out = nn.Linear(c.hidden, n_items + 1)  # W_out, b_out: one row of scores per item

    def reset_parameters(self) -> None:
        """Draw fresh initial weights, in the constructor's order: after ``torch.manual_seed(s)``
        the model equals one built right after ``torch.manual_seed(s)`` (see :func:`course_lib.train.train`)."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    # ------------------------------------------------------------------ padded sequences
    def hidden_states(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the GRU over left-padded ``(B, L)`` item IDs.

        Returns ``(states, lengths)``: ``states`` is ``(B, L, hidden)``, **right-aligned**
        (``states[b, t]`` is :math:`h` after reading the row's ``t + 1``-th item; zeros
        after its end). Padding is never read: the GRU starts from :math:`h_0 = 0` at
        each row's first item, so a history scores the same whatever its padding.
        """
        items, lengths = right_align(seqs)
        x = self.drop(self.item_emb(items))
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        with _full_precision(x.device):
            out, _ = self.gru(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=seqs.shape[1])
        states = states * (lengths > 0)[:, None, None].to(states.dtype)  # empty history: h = 0
        return states, lengths

    def loss(self, batch: torch.LongTensor) -> torch.Tensor:
        """Next-item loss at every position of a left-padded ``(B, max_len + 1)`` batch."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        targets = torch.where(inputs > 0, targets, 0)  # [0 0 a b] -> [0 0 b c]: a target only after a real item
        states, _ = self.hidden_states(inputs)         # right-aligned: states[:, t] = h after the (t+1)-th item
        targets, _ = right_align(targets)              # [b c 0 0]: aligned with the states
        mask = targets > 0
        return self.next_item_loss(self.drop(states[mask]), targets[mask])  # only real positions

    def next_item_loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the whole catalog, or sampled BPR, for states ``h`` (N, hidden) and targets ``y`` (N,)."""
        if self.config.loss == "ce":
            return F.cross_entropy(self.out(h).float(), y)
        neg = torch.randint(1, self.n_items + 1, (len(y), self.config.n_negatives), device=y.device)
        pos_s = (h * self.out.weight[y]).sum(-1) + self.out.bias[y]                          # s_{t, i_{t+1}}
        neg_s = torch.einsum("nd,nkd->nk", h, self.out.weight[neg]) + self.out.bias[neg]   # s_{t, j}
        return -F.logsigmoid((pos_s[:, None] - neg_s).float()).mean()

    def next_item_scores(self, histories) -> torch.Tensor:
        """Logits of the next item after each history (its last ``max_len`` items)."""
        device = self.device
        seqs = torch.as_tensor(pad_sequences(histories, self.config.max_len, side="left"), device=device)
        states, lengths = self.hidden_states(seqs)
        last = states[torch.arange(len(seqs), device=device), (lengths - 1).clamp(min=0)]  # h after the last item
        return self.out(last)

    # ------------------------------------------------------------------ session-parallel
    def step(self, items: torch.Tensor, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One GRU step for ``B`` lanes: ``items`` (B,), ``hidden`` (layers, B, hidden) or None.

        Returns ``(h_top, hidden)``: the top layer's new state (B, hidden) and the full state.
        """
        x = self.drop(self.item_emb(items))[:, None, :]
        with _full_precision(x.device):
            out, hidden = self.gru(x.float(), None if hidden is None else hidden.float())
        return out[:, 0], hidden

    def session_parallel_loss(self, inputs, targets, reset, hidden=None):
        """Loss of one session-parallel step (see :func:`course_lib.seqdata.session_parallel_batches`).

        Lanes flagged in ``reset`` start from :math:`h = 0`; lanes with target 0 are
        ignored. Returns ``(loss, hidden)`` with ``hidden`` detached (truncated
        backpropagation through time, one step, as in the original GRU4Rec).
        """
        device = self.device
        inputs, targets = torch.as_tensor(inputs, device=device), torch.as_tensor(targets, device=device)
        reset = torch.as_tensor(reset, device=device)
        if hidden is not None:
            hidden = hidden * (~reset)[None, :, None].to(hidden.dtype)
        h, hidden = self.step(inputs, hidden)
        mask = targets > 0
        loss = self.next_item_loss(self.drop(h[mask]), targets[mask])
        return loss, hidden.detach()


__all__ = ["GRU4RecConfig", "GRU4Rec", "right_align"]
