r"""Sequence data for sequential recommenders: transitions and session-parallel mini-batches.

Two ways to cut histories into training batches:

* **padded windows** (what :mod:`course_lib.train` uses for every model): each row is
  one user's last ``max_len + 1`` items, left-padded with 0;
* **session-parallel mini-batches** (GRU4Rec, Hidasi et al., ICLR 2016): ``B`` lanes
  each hold one session; at every step each lane contributes one
  ``(input item, next item)`` pair, and a lane whose session ends takes the next
  session at once, with its hidden state reset to zero. No padding is ever
  computed on, and a recurrent model carries its hidden state from one step to
  the next instead of re-reading the whole history.

Example with ``B = 3`` lanes and sessions ``[1 2 3 4] [5 6] [7 8 9] [10 11] [12 13 14]``::

    step        1        2         3         4
    inputs   1  5  7   2 10  8   3 12  0   0 13  0
    targets  2  6  8   3 11  9   4 13  0   0 14  0
    reset    T  T  T   F  T  F   F  T  T   T  F  T

A lane with no session left holds 0 (padding) and is reset; 0 targets are ignored.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def as_sessions(histories: Sequence[np.ndarray], min_len: int = 2) -> list[np.ndarray]:
    """Keep the histories that have at least ``min_len`` items (a session needs one input and one target)."""
    return [np.asarray(h, dtype=np.int64) for h in histories if len(h) >= min_len]


def transitions(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All consecutive pairs ``(h[t], h[t+1])`` of every history, as two int64 arrays ``(prev, next)``."""
    seqs = [np.asarray(h, dtype=np.int64) for h in histories if len(h) >= 2]
    if not seqs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flat = np.concatenate(seqs)
    owner = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    same = owner[:-1] == owner[1:]  # a pair never crosses from one history into the next
    return flat[:-1][same], flat[1:][same]


def session_parallel_batches(sessions: Sequence[np.ndarray], batch_size: int, shuffle: bool = False,
                             seed: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(inputs, targets, reset)``, three arrays of shape ``(batch_size,)``, step by step.

    ``inputs[b]`` is the item lane ``b`` reads now, ``targets[b]`` the item that follows
    it in the same session, ``reset[b]`` is True when the lane starts a new session
    (or has none left), i.e. its hidden state must be zeroed before this step. Lanes
    without a session hold 0 in ``inputs`` and ``targets``. Sessions shorter than 2
    are skipped; ``shuffle`` permutes the session order with ``seed``. Stops when
    every session is consumed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sessions = [np.asarray(s, dtype=np.int64) for s in sessions if len(s) >= 2]
    order = np.arange(len(sessions))
    if shuffle:
        np.random.default_rng(seed).shuffle(order)
    sessions = [sessions[i] for i in order]
    lengths = np.array([len(s) for s in sessions], dtype=np.int64)
    flat = np.concatenate(sessions + [np.zeros(1, np.int64)])  # one trailing 0: idle lanes point at it
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    idle = len(flat) - 1

    n_first = min(batch_size, len(sessions))
    cursor = np.full(batch_size, idle)           # index in ``flat`` of each lane's current input
    last = np.full(batch_size, idle)             # index of the last item of the lane's session
    cursor[:n_first] = start[:n_first]
    last[:n_first] = start[:n_first] + lengths[:n_first] - 1
    next_session = n_first
    reset = np.ones(batch_size, dtype=bool)
    while (cursor != idle).any():
        active = cursor != idle
        inputs = np.where(active, flat[cursor], 0)
        targets = np.where(active, flat[np.minimum(cursor + 1, idle)], 0)
        yield inputs, targets, reset.copy()
        # every lane moves one item on; a lane whose session is used up takes the next one
        cursor = np.where(active, cursor + 1, idle)
        done = np.flatnonzero(active & (cursor >= last))
        new = np.arange(next_session, min(next_session + len(done), len(sessions)))
        next_session += len(new)
        refill, retire = done[: len(new)], done[len(new):]
        cursor[refill], last[refill] = start[new], start[new] + lengths[new] - 1
        cursor[retire], last[retire] = idle, idle
        reset = ~active | (cursor == idle)
        reset[done] = True


def count_session_parallel_steps(sessions: Sequence[np.ndarray], batch_size: int) -> int:
    """How many steps :func:`session_parallel_batches` yields (for progress bars)."""
    return sum(1 for _ in session_parallel_batches(sessions, batch_size))


__all__ = ["as_sessions", "transitions", "session_parallel_batches", "count_session_parallel_steps"]
