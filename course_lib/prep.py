"""From raw interactions to what models eat: ID maps, splits, sequences, matrices.

Conventions used everywhere in the course:

* users and items get contiguous IDs ``1..n``; **0 is reserved for padding**, so the
  same item ID indexes an embedding table, a score vector and a matrix column;
* a score vector has ``n_items + 1`` entries and entry 0 is never recommended;
* a user's history is a time-ordered array of item IDs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

PAD = 0

_REQUIRED = ("user", "item")


def _check_frame(df: pd.DataFrame, cols=_REQUIRED) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame of interactions, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"interactions frame lacks column(s) {missing}; it has {list(df.columns)}. "
                         "Use course_lib.data.load_interactions() or rename your columns.")


@dataclass
class IdMap:
    """A contiguous 1-based mapping of raw IDs; 0 is padding."""
    raw: np.ndarray  # raw[i - 1] is the raw ID of index i
    _index: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.raw = np.asarray(self.raw)
        self._index = {r: i + 1 for i, r in enumerate(self.raw.tolist())}

    @classmethod
    def fit(cls, values) -> "IdMap":
        return cls(np.array(sorted(pd.unique(np.asarray(values)))))

    def __len__(self) -> int:
        return len(self.raw)

    def encode(self, values) -> np.ndarray:
        """Raw IDs to indices; unknown IDs raise ``KeyError`` naming them."""
        values = np.asarray(values)
        out = np.fromiter((self._index.get(v, -1) for v in values.tolist()), dtype=np.int64, count=len(values))
        if (out < 0).any():
            unknown = values[out < 0][:5].tolist()
            raise KeyError(f"IDs not in the map (first few): {unknown}")
        return out

    def decode(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        if ((idx < 1) | (idx > len(self))).any():
            raise IndexError(f"indices must lie in 1..{len(self)} (0 is padding)")
        return self.raw[idx - 1]


def encode_ids(df: pd.DataFrame) -> tuple[pd.DataFrame, IdMap, IdMap]:
    """Return a copy of ``df`` with contiguous 1-based ``user`` and ``item`` columns, and the maps."""
    _check_frame(df)
    umap, imap = IdMap.fit(df["user"]), IdMap.fit(df["item"])
    out = df.copy()
    out["user"] = umap.encode(df["user"])
    out["item"] = imap.encode(df["item"])
    return out, umap, imap


def _sort_by_time(df: pd.DataFrame) -> pd.DataFrame:
    keys = ["user", "timestamp"] if "timestamp" in df.columns else ["user"]
    # mergesort is stable: equal timestamps keep file order, so splits are deterministic
    return df.sort_values(keys, kind="mergesort").reset_index(drop=True)


@dataclass
class Split:
    """Encoded train / validation / test interactions with their ID maps.

    ``valid`` and ``test`` hold the held-out ``(user, item)`` pairs. ``history(stage)``
    gives, per user, what a model may look at before predicting that stage's items.
    """
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int
    user_map: IdMap
    item_map: IdMap
    kind: str = "leave-one-out"

    def __repr__(self) -> str:
        return (f"Split({self.kind}: {self.n_users:,} users, {self.n_items:,} items; "
                f"train {len(self.train):,}, valid {len(self.valid):,}, test {len(self.test):,})")

    def _frames(self, stage: str) -> list[pd.DataFrame]:
        if stage == "valid":
            return [self.train]
        if stage == "test":
            return [self.train, self.valid]
        if stage == "train":
            return [self.train]
        raise ValueError(f"stage must be 'train', 'valid' or 'test', got {stage!r}")

    def history(self, stage: str = "test") -> list[np.ndarray]:
        """Per-user time-ordered item IDs visible before ``stage``; index 0 is an empty padding user.

        ``history("test")``: training and validation items, what a model reads to predict the
        test item; ``history("valid")`` is :meth:`training_histories`.
        """
        frames = [f for f in self._frames(stage) if len(f)]
        return user_sequences(pd.concat(frames, ignore_index=True), self.n_users)

    def training_histories(self) -> list[np.ndarray]:
        """Per-user time-ordered **training** items (everything before the validation item): what
        models learn from, and what they read to predict the validation item. Index 0 is the
        empty padding user."""
        return self.history("valid")

    def targets(self, stage: str = "test") -> pd.DataFrame:
        """The held-out ``(user, item)`` pairs of ``stage`` ('valid' or 'test')."""
        if stage == "valid":
            return self.valid
        if stage == "test":
            return self.test
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")

    def seen_matrix(self, stage: str = "test") -> sp.csr_matrix:
        """Implicit matrix of what each user had seen before ``stage`` (items to exclude)."""
        frames = [f for f in self._frames(stage) if len(f)]
        return interaction_matrix(pd.concat(frames, ignore_index=True), self.n_users, self.n_items, implicit=True)

    def item_popularity(self) -> np.ndarray:
        """Training interactions per item, length ``n_items + 1`` (entry 0 is 0)."""
        return np.bincount(self.train["item"].to_numpy(), minlength=self.n_items + 1)[: self.n_items + 1]


def filter_min_interactions(df: pd.DataFrame, min_user: int = 1, min_item: int = 1) -> pd.DataFrame:
    """Repeatedly drop users and items with too few interactions (k-core filtering)."""
    _check_frame(df)
    while True:
        ucount = df.groupby("user")["item"].transform("size")
        icount = df.groupby("item")["user"].transform("size")
        keep = (ucount >= min_user) & (icount >= min_item)
        if keep.all():
            return df.reset_index(drop=True)
        df = df[keep]


def leave_one_out(df: pd.DataFrame, min_interactions: int = 3) -> Split:
    """Leave-one-out by time: each user's last item is test, the one before is validation.

    Users with fewer than ``min_interactions`` interactions (default 3: one to train
    on, one to validate, one to test) are dropped.
    """
    _check_frame(df)
    if min_interactions < 3:
        raise ValueError("leave_one_out needs min_interactions >= 3 (train, validation, test)")
    df = df[df.groupby("user")["item"].transform("size") >= min_interactions]
    if df.empty:
        raise ValueError(f"no user has at least {min_interactions} interactions")
    enc, umap, imap = encode_ids(df)
    enc = _sort_by_time(enc)
    pos_from_end = enc.groupby("user").cumcount(ascending=False)
    test = enc[pos_from_end == 0].reset_index(drop=True)
    valid = enc[pos_from_end == 1].reset_index(drop=True)
    train = enc[pos_from_end >= 2].reset_index(drop=True)
    return Split(train, valid, test, len(umap), len(imap), umap, imap, kind="leave-one-out")


def temporal_split(df: pd.DataFrame, valid_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """Global temporal split: the last ``test_frac`` of interactions (by time) are test,
    the ``valid_frac`` before them validation. Validation/test rows of users or items
    never seen in training are dropped (a model cannot score them)."""
    _check_frame(df, ("user", "item", "timestamp"))
    if not (0 < valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError("valid_frac and test_frac must be in (0, 1) and sum to less than 1")
    enc, umap, imap = encode_ids(df)
    enc = enc.sort_values("timestamp", kind="mergesort").reset_index(drop=True)
    n = len(enc)
    t_valid, t_test = int(round(n * (1 - valid_frac - test_frac))), int(round(n * (1 - test_frac)))
    train, valid, test = enc.iloc[:t_valid], enc.iloc[t_valid:t_test], enc.iloc[t_test:]
    known_u, known_i = set(train["user"]), set(train["item"])

    def known(part):
        return part[part["user"].isin(known_u) & part["item"].isin(known_i)].reset_index(drop=True)

    return Split(_sort_by_time(train), known(valid), known(test), len(umap), len(imap), umap, imap, kind="temporal")


def random_split(df: pd.DataFrame, test_frac: float = 0.2, valid_frac: float = 0.0, seed: int = 0) -> Split:
    """Random split of the **ratings** (not by time): the classic rating-prediction protocol.

    ``test_frac`` of all rows go to test; ``valid_frac`` of the remaining training rows go
    to validation (for tuning). IDs are encoded over the whole frame (1-based, 0 = padding),
    so a test user or item may have few or no training ratings: the model then falls back
    on the biases. Returns a :class:`Split` with ``kind="random"``.
    """
    if "rating" not in df.columns:
        raise ValueError("random_split needs a 'rating' column (it is the rating-prediction split)")
    if not (0 < test_frac < 1 and 0 <= valid_frac < 1):
        raise ValueError("test_frac must be in (0, 1) and valid_frac in [0, 1)")
    enc, umap, imap = encode_ids(df)
    perm = np.random.default_rng(seed).permutation(len(enc))
    n_test = int(round(test_frac * len(enc)))
    n_valid = int(round(valid_frac * (len(enc) - n_test)))
    test = enc.iloc[np.sort(perm[:n_test])].reset_index(drop=True)
    valid = enc.iloc[np.sort(perm[n_test:n_test + n_valid])].reset_index(drop=True)
    train = enc.iloc[np.sort(perm[n_test + n_valid:])].reset_index(drop=True)
    return Split(train, valid, test, len(umap), len(imap), umap, imap, kind="random")


def interaction_matrix(df: pd.DataFrame, n_users: int | None = None, n_items: int | None = None,
                       implicit: bool = False) -> sp.csr_matrix:
    """Sparse user-item matrix of shape ``(n_users + 1, n_items + 1)`` (row/column 0: padding).

    Explicit: the rating (the last one if a pair repeats). Implicit: 1 for every observed pair.
    """
    _check_frame(df)
    users = df["user"].to_numpy(np.int64)
    items = df["item"].to_numpy(np.int64)
    n_users = int(users.max()) if n_users is None else n_users
    n_items = int(items.max()) if n_items is None else n_items
    if len(users) and (users.min() < 0 or items.min() < 0 or users.max() > n_users or items.max() > n_items):
        raise ValueError("user/item IDs must lie in 1..n; encode them first with encode_ids()")
    if implicit:
        vals = np.ones(len(users), dtype=np.float32)
        m = sp.csr_matrix((vals, (users, items)), shape=(n_users + 1, n_items + 1))
        m.data[:] = 1.0  # duplicates were summed; clip back to 1
        return m
    if "rating" not in df.columns:
        raise ValueError("an explicit matrix needs a 'rating' column; pass implicit=True for 0/1")
    last = df.drop_duplicates(["user", "item"], keep="last")
    return sp.csr_matrix((last["rating"].to_numpy(np.float32), (last["user"].to_numpy(), last["item"].to_numpy())),
                         shape=(n_users + 1, n_items + 1))


def density(matrix: sp.spmatrix, padded: bool = True) -> float:
    """Fraction of observed cells, ignoring the padding row and column when ``padded``."""
    rows, cols = matrix.shape
    if padded:
        rows, cols = rows - 1, cols - 1
    return matrix.nnz / float(rows * cols)


def pad_sequences(seqs, max_len: int, side: str = "left", pad: int = PAD) -> np.ndarray:
    """Stack sequences into an ``(n, max_len)`` int64 array, keeping the **last** ``max_len`` items.

    ``side='left'`` puts padding before the items (the most recent item sits in the
    last column, as causal models want).
    """
    if max_len < 1:
        raise ValueError("max_len must be >= 1")
    if side not in ("left", "right"):
        raise ValueError("side must be 'left' or 'right'")
    out = np.full((len(seqs), max_len), pad, dtype=np.int64)
    for r, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64)[-max_len:]
        if len(s):
            if side == "left":
                out[r, max_len - len(s):] = s
            else:
                out[r, : len(s)] = s
    return out


def user_sequences(df: pd.DataFrame, n_users: int | None = None) -> list[np.ndarray]:
    """Time-ordered item sequences per encoded user (index 0 empty)."""
    _check_frame(df)
    n_users = int(df["user"].max()) if n_users is None else n_users
    out = [np.zeros(0, dtype=np.int64) for _ in range(n_users + 1)]
    for u, items in _sort_by_time(df).groupby("user")["item"]:
        out[int(u)] = items.to_numpy(np.int64)
    return out


def cold_item_split(split: Split, frac: float = 0.2, seed: int = 0) -> tuple[Split, np.ndarray]:
    """Item cold start: hide a random ``frac`` of the items from everything a model learns from.

    Every training and validation interaction with a cold item is removed, so no model has
    seen those items (no ID embedding, no co-occurrence, zero popularity); the test
    interactions are kept, so some users' next item is cold. Returns the new split (same ID
    maps and sizes) and the sorted array of cold item IDs. Use :func:`cold_test_users` to
    evaluate cold and warm targets separately."""
    if not 0 < frac < 1:
        raise ValueError(f"frac must lie strictly between 0 and 1, got {frac}")
    rng = np.random.default_rng(seed)
    n_cold = max(1, int(round(frac * split.n_items)))
    cold = np.sort(rng.choice(np.arange(1, split.n_items + 1), size=n_cold, replace=False))
    keep = lambda df: df[~df["item"].isin(cold)].reset_index(drop=True)  # noqa: E731
    new = Split(keep(split.train), keep(split.valid), split.test.copy(), split.n_users, split.n_items,
                split.user_map, split.item_map, kind=f"{split.kind}, {len(cold)} cold items")
    return new, cold


def cold_test_users(split: Split, cold_items, stage: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Users of ``stage`` whose held-out item is cold, and those whose item is warm (two sorted arrays)."""
    t = split.targets(stage)
    is_cold = t["item"].isin(np.asarray(cold_items))
    return np.sort(t.loc[is_cold, "user"].unique()), np.sort(t.loc[~is_cold, "user"].unique())
