r"""Content-based filtering: k-NN over item features.

Each movie becomes a feature vector built from its metadata (no ratings needed):

* **genres**: a multi-hot vector (a movie can be both *Comedy* and *Romance*);
* **year**: a one-hot release decade, softened by also lighting the neighbouring
  decades at half strength, so a 1979 movie is close to a 1981 one;
* **title words**: TF-IDF. For word :math:`t` in title :math:`d` of :math:`N` titles,

  .. math::

     \mathrm{tfidf}(t, d) = \mathrm{tf}(t, d)\cdot\Big(\ln\frac{1 + N}{1 + \mathrm{df}(t)} + 1\Big)

  where :math:`\mathrm{df}(t)` counts the titles that contain :math:`t`: a word that
  appears in every title ("the") weighs little, a rare one ("Godfather") a lot.

Each block is L2-normalised and weighted (``genre_weight``, ``year_weight``,
``title_weight``), then the concatenation is L2-normalised, so the dot product of two
item vectors is their cosine similarity. Scoring is then exactly item-based k-NN
(:class:`~course_lib.models.knn.ItemKNN`), with this content similarity in place of the
co-rating one: :math:`\hat r_i = \sum_{j \in H} s(j, i)\,[i \in N_k(j)]`.

Because the similarity never looks at interactions, a **new item** with metadata but
no ratings is scored like any other; collaborative models cannot do that.

Usage::

    items = course_lib.data.load_items("ml-100k")
    model = ContentKNN(items).fit(split)          # or ContentKNN().fit(split, items=items)
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .base import configure
from .knn import KNNConfig, _ItemNeighbourhood, cosine_similarity

TOKEN = re.compile(r"[^\W_]+")  # runs of Unicode letters and digits: "Misérables", "Амели", "1983"
STOPWORDS = frozenset("a an and the of in on to for with at by from la le les el de des du der die das".split())


def tokenize(text: str, stopwords=STOPWORDS) -> list[str]:
    """Lower-case alphanumeric words of ``text`` minus stop words and one-letter words.

    Unicode-aware: accented and non-Latin letters are part of a word ("Misérables, Les" ->
    ``['misérables']``), and the text is NFC-normalised first, so a letter written as a
    base plus a combining accent gives the same word as the precomposed one. On ASCII text
    it splits exactly as ``[a-z0-9]+`` does.
    """
    text = unicodedata.normalize("NFC", str(text)).lower()
    return [w for w in TOKEN.findall(text) if len(w) > 1 and w not in stopwords]


def tfidf(docs, min_df: int = 1, vocabulary: dict | None = None) -> tuple[sp.csr_matrix, dict]:
    r"""TF-IDF matrix of a list of token lists, rows L2-normalised.

    ``tf`` is the raw count, ``idf(t) = ln((1 + N) / (1 + df(t))) + 1`` (the smoothed
    form: never zero, never a division by zero). Words in fewer than ``min_df``
    documents are dropped. Returns ``(matrix (N, V), vocabulary {word: column})``;
    pass ``vocabulary`` to reuse the columns of an earlier call (unknown words ignored;
    the idf is always computed on ``docs``).
    """
    docs = [list(d) for d in docs]
    if vocabulary is None:
        df_count: dict[str, int] = {}
        for d in docs:
            for w in set(d):
                df_count[w] = df_count.get(w, 0) + 1
        words = sorted(w for w, c in df_count.items() if c >= min_df)
        vocabulary = {w: i for i, w in enumerate(words)}
    rows, cols = [], []
    for r, d in enumerate(docs):
        for w in d:
            c = vocabulary.get(w)
            if c is not None:
                rows.append(r)
                cols.append(c)
    tf = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(docs), len(vocabulary)))
    tf.sum_duplicates()
    n = len(docs)
    df = np.bincount(tf.indices, minlength=len(vocabulary))
    idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
    return _l2_rows(tf @ sp.diags(idf)), vocabulary


def _l2_rows(M) -> sp.csr_matrix:
    M = sp.csr_matrix(M, dtype=np.float32)
    norms = np.sqrt(np.asarray(M.multiply(M).sum(1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ M)


@dataclass
class ContentConfig(KNNConfig):
    """k-NN options (``k``, ``shrink``, ``recency``) plus the weight of each feature block."""
    k: int = 20
    shrink: float = 0.0
    genre_weight: float = 1.0
    year_weight: float = 1.0
    title_weight: float = 0.5
    min_df: int = 2


def item_features(items: pd.DataFrame, item_map=None, genre_weight: float = 1.0, year_weight: float = 1.0,
                  title_weight: float = 0.5, min_df: int = 2) -> tuple[sp.csr_matrix, list[str]]:
    """Feature matrix ``(n_items + 1, d)`` aligned with encoded item IDs (row 0: padding, zeros).

    ``items`` is :func:`course_lib.data.load_items`'s frame (``item``, ``title``, ``year``,
    ``genres``). ``item_map`` (a split's :class:`~course_lib.prep.IdMap`) gives row ``i``
    to raw ID ``item_map.raw[i - 1]``; without it rows follow the frame's order. Items the
    frame lacks get a zero row. Returns ``(features, column names)``.
    """
    missing = [c for c in ("item", "title", "year", "genres") if c not in items.columns]
    if missing:
        raise ValueError(f"items frame lacks column(s) {missing}; use course_lib.data.load_items()")
    if item_map is None:
        raw_ids = items["item"].to_numpy()
    else:
        raw_ids = np.asarray(item_map.raw)
    table = items.drop_duplicates("item").set_index("item").reindex(raw_ids)
    n = len(raw_ids)
    genres = table["genres"].apply(lambda g: list(g) if isinstance(g, (list, tuple, np.ndarray)) else [])
    # genres: multi-hot
    g_names = sorted({g for gs in genres for g in gs})
    g_index = {g: i for i, g in enumerate(g_names)}
    g_rows = np.repeat(np.arange(n), genres.apply(len).to_numpy())
    g_cols = np.array([g_index[g] for gs in genres for g in gs], dtype=np.int64)
    G = sp.csr_matrix((np.ones(len(g_cols), np.float32), (g_rows, g_cols)), shape=(n, len(g_names)))
    # year: decade one-hot, neighbouring decades at half strength
    years = pd.to_numeric(table["year"], errors="coerce").to_numpy(dtype=float)
    has_year = np.isfinite(years)
    decades = np.arange(1910, 2010, 10)
    dec = np.clip(((np.nan_to_num(years, nan=1990) - 1910) // 10).astype(int), 0, len(decades) - 1)
    Y = np.zeros((n, len(decades)), np.float32)
    for shift, w in ((-1, 0.5), (0, 1.0), (1, 0.5)):
        cols = dec + shift
        ok = has_year & (cols >= 0) & (cols < len(decades))
        Y[np.flatnonzero(ok), cols[ok]] = w
    Y = sp.csr_matrix(Y)
    # title words: TF-IDF
    T, vocab = tfidf(table["title"].fillna("").apply(tokenize), min_df=min_df)
    blocks = [genre_weight * _l2_rows(G), year_weight * _l2_rows(Y), title_weight * T]
    F = _l2_rows(sp.hstack(blocks, format="csr"))
    F = sp.vstack([sp.csr_matrix((1, F.shape[1]), dtype=np.float32), F], format="csr")
    names = ([f"genre:{g}" for g in g_names] + [f"decade:{d}s" for d in decades]
             + [f"title:{w}" for w in sorted(vocab, key=vocab.get)])
    return F, names


def genre_matrix(items: pd.DataFrame, item_map=None) -> sp.csr_matrix:
    """Multi-hot genres only, ``(n_items + 1, n_genres)``: the space where diversity is usually measured."""
    F, names = item_features(items, item_map, genre_weight=1.0, year_weight=0.0, title_weight=0.0)
    cols = [i for i, nm in enumerate(names) if nm.startswith("genre:")]
    G = F[:, cols]
    G.data[:] = 1.0
    return sp.csr_matrix(G)


class ContentKNN(_ItemNeighbourhood):
    """Item-item k-NN on metadata features (genres, decade, TF-IDF title words)."""

    name = "ContentKNN"

    def __init__(self, items: pd.DataFrame | None = None, config: ContentConfig | None = None, **overrides):
        if items is not None and not isinstance(items, pd.DataFrame):
            raise TypeError(f"items must be the frame from course_lib.data.load_items(), got {type(items).__name__}")
        self.config = configure(ContentConfig, config, overrides)
        self.items = items

    def fit(self, split, items: pd.DataFrame | None = None, **kwargs) -> "ContentKNN":
        """Build features for ``split``'s items (``items`` here or in the constructor) and the k-NN graph.

        Uses no interaction at all: only ``split.item_map`` to align rows with item IDs.
        """
        items = items if items is not None else self.items
        if items is None:
            raise ValueError("ContentKNN needs the items table: ContentKNN(load_items(...)).fit(split) "
                             "or ContentKNN().fit(split, items=load_items(...))")
        self.items = items
        self.n_items = split.n_items
        c = self.config
        self.features_, self.feature_names_ = item_features(items, split.item_map, c.genre_weight, c.year_weight,
                                                            c.title_weight, c.min_df)
        if self.features_.shape[0] != self.n_items + 1:
            raise ValueError(f"item_map has {self.features_.shape[0] - 1} items but the split has {self.n_items}")
        self._set_similarity(cosine_similarity(self.features_, shrink=c.shrink))
        return self

    def __repr__(self) -> str:
        c = self.config
        return (f"ContentKNN(k={c.k}, genre_weight={c.genre_weight}, year_weight={c.year_weight}, "
                f"title_weight={c.title_weight})")
