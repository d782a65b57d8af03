"""What every neural recommender shares: a device, an evaluation-mode context, ``fit``, a short repr.

GRU4Rec, SASRec and BERT4Rec (and the LLM models of notebooks 10-17 that train with
:func:`course_lib.train.train`) subclass :class:`NeuralRecommender`. A subclass writes

* ``__init__(n_items, config)``: its layers;
* ``loss(batch)``: a scalar for a ``(B, max_len + 1)`` batch of left-padded item IDs;
* ``next_item_scores(histories)``: ``(B, n_items + 1)`` scores, called in evaluation mode
  without gradients (:meth:`score` sets that up and always restores the training mode);

and gets ``fit(split, **train_options)`` (the shared trainer), ``score`` and
``recommend`` (:class:`~course_lib.models.base.Recommender`), ``device`` and a one-line
``repr`` with its configuration and parameter count.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .base import Recommender, configure


class NeuralRecommender(nn.Module, Recommender):
    """Base class of the course's neural recommenders (see the module docstring)."""

    config = None  # a dataclass with at least ``max_len``: the trainer reads it
    config_class = None  # the dataclass of ``config``
    history_ = None  # the :class:`course_lib.train.History` of the last ``fit``
    # The training options ``fit`` uses unless told otherwise (TrainConfig fields): each model's
    # were chosen on the validation split of ml-100k (benchmarks/results/sequential*.md).
    train_defaults: dict = {}

    def _configure(self, config, overrides: dict):
        """``config`` (default: ``config_class()``) with ``overrides`` (:func:`~course_lib.models.base.configure`):
        ``SASRec(n, hidden=128)`` and ``SASRec(n, SASRecConfig(hidden=128))`` build the same model."""
        return configure(self.config_class, config, overrides)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live (cpu, cuda or mps)."""
        return next(self.parameters()).device

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode without gradients, for the block; the previous mode comes back even on an error."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield self
        finally:
            self.train(was_training)

    def fit(self, split, **train_options) -> "NeuralRecommender":
        """Train on ``split`` with :func:`course_lib.train.train` (early stopping on validation NDCG@10).

        ``train_options`` are :class:`course_lib.train.TrainConfig` fields (``epochs=20, lr=3e-3``);
        the model's ``train_defaults`` fill in the rest (see :meth:`training_options`). The
        training history is kept in ``self.history_``; returns ``self`` like every ``fit``.
        """
        from ..train import train

        self.history_ = train(self, split, **self.training_options(**train_options))
        return self

    @classmethod
    def training_options(cls, **overrides) -> dict:
        """The model's ``train_defaults`` with ``overrides`` on top: what ``fit`` passes to the trainer."""
        return {**cls.train_defaults, **overrides}

    def next_item_scores(self, histories: Sequence[np.ndarray]) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError(f"{type(self).__name__} does not implement next_item_scores()")

    def score(self, users, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Next-item scores ``(len(users), n_items + 1)`` from each history's last ``max_len`` items (float32)."""
        if len(users) != len(histories):
            raise ValueError(f"got {len(users)} users but {len(histories)} histories")
        lengths = [len(h) for h in histories]
        if any(lengths):
            flat = np.concatenate([np.asarray(h).ravel() for h, n in zip(histories, lengths) if n])
            if flat.min() < 1 or flat.max() > self.n_items:
                raise ValueError(f"histories hold item IDs {flat.min()}..{flat.max()}, outside 1..{self.n_items} "
                                 "(0 is padding): encode them with course_lib.prep and build the model with the "
                                 "split's n_items")
        with self.evaluating():
            return self.next_item_scores(histories).float()

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def __repr__(self) -> str:  # nn.Module's repr lists every layer; one line is easier to read in a notebook
        fields = ""
        if dataclasses.is_dataclass(self.config):
            fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in dataclasses.fields(self.config))
        return f"{type(self).__name__}(n_items={self.n_items}, {fields}; {self.n_parameters():,} parameters)"


__all__ = ["NeuralRecommender"]
