r"""The LLM as conductor: it does not store the catalog in its weights, it calls tools that do.

This module is read in two parts.

**Retrieval-augmented recommendation** (notebook 15, the section below):

1. a **catalog corpus**: one verbalized text per item (:func:`catalog_corpus`), exactly the
   texts the course embeds and caches (:func:`~course_lib.llm.verbalize.item_texts`);
2. three **retrievers** with one interface, ``search(queries, k) -> (ids, scores)``, both
   ``(len(queries), k)`` arrays, best first:

   * :class:`BM25Retriever` (lexical, ``bm25s``): exact words, weighted by rarity;
   * :class:`DenseRetriever` (MiniLM, cosine between query and item embeddings);
   * :class:`HybridRetriever`: **weighted reciprocal-rank fusion** of the two by default,
     :math:`s(d) = \frac{w}{k_0 + r_{lex}(d)} + \frac{1 - w}{k_0 + r_{dense}(d)}` with
     competition ranks (ties share the best rank) over the whole catalog and :math:`k_0 = 60`
     (Cormack et al., 2009); ``method="minmax"`` mixes min-max normalised scores instead;
3. **queries with known answers** generated from metadata (:func:`make_queries`,
   :func:`query_sets`): a genre (or two) and a decade, optionally "like <a film>", in literal
   ("a comedy from the 80s") or paraphrased ("a funny movie made in the eighties") words; the
   answer set is every catalog item that satisfies the constraints (the anchor film excluded);
4. **evaluation**: recall@k and NDCG@k per query (:func:`recall_at_k`, :func:`per_query`);
5. **RAG re-ranking**: the LLM scores each *retrieved* candidate by its likelihood as the answer
   to the request (:func:`rerank`, via :func:`~course_lib.llm.scoring.sequence_logprob`), so its
   output is a permutation of the retrieved IDs, and :func:`only_retrieved` guards any output;
6. **free generation** for comparison: the LLM writes a title (greedy, a few tokens), which is
   grounded to the catalog with rapidfuzz (:func:`free_generation`); the share that grounds to
   nothing is the out-of-catalog rate, which RAG's output cannot have.

**Dialogue** (notebook 16) lives in :mod:`course_lib.llm.dialogue`: intent, dialogue state,
policy and templated replies around these retrievers (its recommendations come from them and
pass :func:`only_retrieved`), and the user simulators it is tested with.

No function here except :func:`rerank` and :func:`free_generation` runs a language model, and
only :func:`free_generation` generates text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .verbalize import clean_title, clean_year, item_texts

NO_ITEM = -1

# ============================================================================= retrieval
# ----------------------------------------------------------------------------- 1. the corpus


@dataclass
class Corpus:
    """The catalog as documents: ``texts[j]`` describes item ``ids[j]``."""
    ids: np.ndarray                 # raw item IDs (int64)
    texts: list[str]                # verbalized items ("Ghostbusters (1984); genres: comedy, horror")
    titles: list[str]               # clean titles ("The Usual Suspects")
    years: list[int | None]
    genres: list[tuple[str, ...]]   # catalog genre labels ("Sci-Fi", "Children's")
    popularity: np.ndarray | None = None   # optional interaction counts (used to pick "like X" anchors)

    def __len__(self) -> int:
        return len(self.ids)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int64)
        n = len(self.ids)
        if not (len(self.texts) == len(self.titles) == len(self.years) == len(self.genres) == n):
            raise ValueError("ids, texts, titles, years and genres must have one entry per item")
        if len(set(self.ids.tolist())) != n:
            raise ValueError("item IDs must be unique")
        self.position = {int(i): j for j, i in enumerate(self.ids)}
        self.labels = sorted({g for gs in self.genres for g in gs})
        self.genre_matrix = np.array([[g in gs for g in self.labels] for gs in self.genres], dtype=bool).reshape(
            n, len(self.labels))
        self.decades = np.array([-1 if y is None else int(y) // 10 * 10 for y in self.years], dtype=np.int64)

    def matching(self, genres: Sequence[str], decade: int) -> np.ndarray:
        """Boolean mask of the items that have every genre in ``genres`` and fall in ``decade``."""
        mask = self.decades == int(decade)
        for g in genres:
            if g not in self.labels:
                return np.zeros(len(self), dtype=bool)
            mask &= self.genre_matrix[:, self.labels.index(g)]
        return mask

    def text_of(self, item: int) -> str:
        return self.texts[self.position[int(item)]]

    def title_of(self, item: int) -> str:
        return self.titles[self.position[int(item)]]


def catalog_corpus(items: pd.DataFrame, popularity=None) -> Corpus:
    """A :class:`Corpus` from a catalog frame (``item``, ``title``, ``year``, ``genres``).

    The texts are :func:`~course_lib.llm.verbalize.item_texts` (title, year, genres; duplicate
    titles disambiguated), the same strings the course caches MiniLM embeddings for.
    ``popularity``: optional mapping or Series item -> interaction count."""
    texts = item_texts(items, with_genres=True)
    ids = items["item"].to_numpy(np.int64)
    years = [clean_year(y) for y in (items["year"] if "year" in items else [None] * len(items))]
    raw_genres = items["genres"] if "genres" in items else [()] * len(items)
    genres = [tuple(g for g in (gs if isinstance(gs, (list, tuple, np.ndarray)) else re.split(r"[|,]", str(gs or "")))
                    if g and str(g).strip() and str(g).lower() != "unknown") for gs in raw_genres]
    pop = None
    if popularity is not None:
        pop_map = pd.Series(popularity)
        pop = np.asarray([float(pop_map.get(int(i), 0.0)) for i in ids])
    return Corpus(ids, texts.loc[ids].tolist(), [clean_title(t) for t in items["title"]], years,
                  [tuple(str(g) for g in gs) for gs in genres], pop)


# ----------------------------------------------------------------------------- 2. retrievers

STOPWORDS = frozenset("""a an the and or of from in on at to for with by like about is are be was were that this it its
i me my we you your some something any one s t please want looking find recommend show give movie movies film films
""".split())


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stop words (``"Sci-Fi"`` -> ``["sci", "fi"]``); the same for
    documents and queries."""
    return [t for t in re.findall(r"[a-z0-9]+", str(text).lower()) if t not in STOPWORDS]


def competition_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks per row, ties sharing the best rank (``[3, 5, 5, 1] -> [3, 1, 1, 4]``):
    rank = 1 + the number of strictly higher scores."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    srt = np.sort(s, axis=1)
    n = s.shape[1]
    higher = np.stack([n - np.searchsorted(row, x, side="right") for row, x in zip(srt, s)])
    return higher + 1


def topk(scores: np.ndarray, ids: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None,
         ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores`` as item IDs and scores, best first, ties by
    catalog order; ``exclude[r]`` lists item IDs never returned for row ``r``. Rows with fewer than
    ``k`` allowed items are filled with ``NO_ITEM`` and ``-inf``."""
    s = np.array(scores, dtype=np.float64, copy=True)
    if s.ndim != 2 or s.shape[1] != len(ids):
        raise ValueError(f"scores must be (queries, {len(ids)}), got {s.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude is not None:
        pos = {int(i): j for j, i in enumerate(ids)}
        for r, ex in enumerate(exclude):
            cols = [pos[int(i)] for i in (ex or ()) if int(i) in pos]
            if cols:
                s[r, cols] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    top_s = np.take_along_axis(s, order, axis=1)
    top_i = np.asarray(ids, dtype=np.int64)[order]
    top_i[~np.isfinite(top_s)] = NO_ITEM
    if order.shape[1] < k:  # a catalog smaller than k
        pad = k - order.shape[1]
        top_i = np.hstack([top_i, np.full((len(s), pad), NO_ITEM, dtype=np.int64)])
        top_s = np.hstack([top_s, np.full((len(s), pad), -np.inf)])
    return top_i, top_s


class Retriever:
    """Scores every catalog item for each query; :meth:`search` keeps the top ``k``."""
    name = "retriever"
    corpus: Corpus

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """``(len(queries), len(corpus))`` relevance scores (higher is better)."""
        raise NotImplementedError

    def search(self, queries: Sequence[str] | str, k: int = 10, exclude: Sequence[Sequence[int]] | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, scores)``, each ``(len(queries), k)``: the best ``k`` item IDs per query, best first."""
        if isinstance(queries, str):
            queries = [queries]
        queries = [str(q) for q in queries]
        if not queries:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
        return topk(self.scores(queries), self.corpus.ids, k, exclude)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {len(self.corpus)} items)"


class BM25Retriever(Retriever):
    r"""Okapi BM25 over the corpus texts (``bm25s``, Lucene's variant):

    .. math:: s(q, d) = \sum_{t \in q} \mathrm{idf}(t)\,\frac{f(t, d)\,(k_1 + 1)}{f(t, d) + k_1 (1 - b + b\,|d| / \overline{|d|})}

    A query with no word of the vocabulary (an empty query, another language) scores 0 everywhere."""
    name = "BM25"

    def __init__(self, corpus: Corpus, k1: float = 1.5, b: float = 0.75):
        import bm25s
        self.corpus = corpus
        self.index = bm25s.BM25(k1=k1, b=b)
        docs = [tokenize(t) or ["_empty_"] for t in corpus.texts]
        self.index.index(docs, show_progress=False)
        self.vocab = set(t for d in docs for t in d)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(queries), len(self.corpus)))
        for r, q in enumerate(queries):
            toks = [t for t in tokenize(q) if t in self.vocab]
            if toks:
                out[r] = self.index.get_scores(toks)
        return out


class DenseRetriever(Retriever):
    """Cosine similarity between the query's and each item's embedding.

    ``embed(texts) -> (n, d)`` defaults to MiniLM through
    :func:`~course_lib.llm.encoder.embed_texts` (the catalog's vectors come from the course
    cache; queries are embedded on the fly). Any function works, e.g. a fake one in a test."""
    name = "dense (MiniLM)"

    def __init__(self, corpus: Corpus, embed: Callable[[list[str]], np.ndarray] | None = None, encoder=None,
                 progress: bool = False):
        self.corpus = corpus
        if embed is None:
            from .encoder import embed_texts

            def embed(texts):  # the catalog is cached on disk (above), queries are not
                return embed_texts(list(texts), encoder, cache=False, progress=False)
            self.item_vecs = _unit(embed_texts(list(corpus.texts), encoder, cache=True, progress=progress))
        else:
            self.item_vecs = _unit(np.asarray(embed(list(corpus.texts)), dtype=np.float32))
        self.embed = embed
        self._memo: dict[str, np.ndarray] = {}

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        texts = [q if q.strip() else "." for q in queries]
        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:  # each distinct query is embedded once per retriever (the hybrid asks again)
            self._memo.update(zip(new, _unit(np.asarray(self.embed(new), dtype=np.float32))))
        q = np.stack([self._memo[t] for t in texts])
        return (q @ self.item_vecs.T).astype(np.float64)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def rrf(score_mats: Sequence[np.ndarray], weights: Sequence[float], k0: float = 60.0) -> np.ndarray:
    r"""Weighted reciprocal-rank fusion: :math:`\sum_m w_m / (k_0 + r_m(d))`, with :math:`r_m` the
    competition rank (1 = best, ties share the best rank) of item ``d`` under score matrix ``m``."""
    if len(score_mats) != len(weights):
        raise ValueError("one weight per score matrix")
    return sum(w / (k0 + competition_ranks(s)) for s, w in zip(score_mats, weights))


def minmax(scores: np.ndarray) -> np.ndarray:
    """Each row scaled to [0, 1] (a constant row becomes 0)."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    lo, hi = s.min(1, keepdims=True), s.max(1, keepdims=True)
    return np.divide(s - lo, hi - lo, out=np.zeros_like(s), where=hi > lo)


class HybridRetriever(Retriever):
    """Lexical and dense fused: weighted reciprocal-rank fusion (``method="rrf"``, the default) or a
    weighted mix of min-max normalised scores (``"minmax"``). ``weight`` is the lexical share:
    1.0 is BM25 alone, 0.0 dense alone. Choose it on validation queries (:func:`tune_weight`)."""

    def __init__(self, lexical: Retriever, dense: Retriever, weight: float = 0.5, method: str = "rrf",
                 k0: float = 60.0):
        if method not in ("rrf", "minmax"):
            raise ValueError("method must be 'rrf' or 'minmax'")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        if not np.array_equal(lexical.corpus.ids, dense.corpus.ids):
            raise ValueError("both retrievers must index the same corpus")
        self.lexical, self.dense, self.weight, self.method, self.k0 = lexical, dense, float(weight), method, k0
        self.corpus = lexical.corpus
        self.name = f"hybrid ({method}, w={self.weight:g})"

    def fuse(self, lex: np.ndarray, den: np.ndarray) -> np.ndarray:
        w = self.weight
        if self.method == "rrf":
            return rrf([lex, den], [w, 1.0 - w], self.k0)
        return w * minmax(lex) + (1.0 - w) * minmax(den)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        return self.fuse(self.lexical.scores(queries), self.dense.scores(queries))

    def with_weight(self, weight: float) -> "HybridRetriever":
        return HybridRetriever(self.lexical, self.dense, weight, self.method, self.k0)


# ----------------------------------------------------------------------------- 3. queries with known answers

# genre label -> (literal noun phrase, paraphrase noun phrase)
GENRE_WORDS = {
    "Action": ("an action movie", "a movie full of fights and explosions"),
    "Adventure": ("an adventure movie", "a movie about a daring journey"),
    "Animation": ("an animated movie", "a cartoon"),
    "Children's": ("a children's movie", "a film for kids"),
    "Comedy": ("a comedy", "a funny movie"),
    "Crime": ("a crime movie", "a gangster film"),
    "Documentary": ("a documentary", "a non-fiction film about real events"),
    "Drama": ("a drama", "a serious, emotional film"),
    "Fantasy": ("a fantasy movie", "a film full of magic"),
    "Film-Noir": ("a film noir", "a dark black-and-white detective story"),
    "Horror": ("a horror movie", "a scary movie"),
    "Musical": ("a musical", "a film where the characters sing"),
    "Mystery": ("a mystery", "a whodunit"),
    "Romance": ("a romance", "a love story"),
    "Sci-Fi": ("a sci-fi movie", "a science fiction film"),
    "Thriller": ("a thriller", "a suspenseful film"),
    "War": ("a war movie", "a film about soldiers in battle"),
    "Western": ("a western", "a cowboy film"),
}
DECADE_WORDS = {1920: "twenties", 1930: "thirties", 1940: "forties", 1950: "fifties", 1960: "sixties",
                1970: "seventies", 1980: "eighties", 1990: "nineties"}


def decade_of(year) -> int | None:
    y = clean_year(year)
    return None if y is None else y // 10 * 10


def decade_phrase(decade: int, style: str, short: bool = False) -> str:
    """``"from the 1980s"`` (literal; ``"from the 80s"`` when ``short``) or ``"made in the eighties"``
    (paraphrase)."""
    if style == "paraphrase" and decade in DECADE_WORDS:
        return f"made in the {DECADE_WORDS[decade]}"
    return f"from the {decade % 100:02d}s" if short else f"from the {decade}s"


@dataclass(frozen=True)
class Query:
    """A request with a known answer set: every item with all ``genres`` released in ``decade``.

    ``anchor`` is the film of a "like <film>" request: it satisfies the constraints but is not an
    answer (the user has seen it), and retrieval must exclude it."""
    text: str
    answers: frozenset
    genres: tuple
    decade: int
    anchor: int | None = None
    style: str = "literal"

    @property
    def exclude(self) -> list[int]:
        return [] if self.anchor is None else [int(self.anchor)]


def satisfies(genres: Sequence[str], year, want_genres: Sequence[str], decade: int) -> bool:
    """True when an item with ``genres`` and ``year`` has every wanted genre and falls in ``decade``."""
    return decade_of(year) == decade and set(want_genres) <= set(genres)


def answer_set(corpus: Corpus, genres: Sequence[str], decade: int) -> frozenset:
    """IDs of every item of ``corpus`` that satisfies the constraints."""
    return frozenset(corpus.ids[corpus.matching(genres, decade)].tolist())


def constraint_pool(corpus: Corpus, min_answers: int = 3, max_answers: int = 30, max_genres: int = 2,
                    ) -> list[tuple[tuple[str, ...], int]]:
    """Every (genres, decade) with one or two known genres whose answer set has between
    ``min_answers`` and ``max_answers`` items (+1 for a possible anchor), in a fixed order."""
    from itertools import combinations
    labels = [g for g in corpus.labels if g in GENRE_WORDS]
    decades = sorted(int(d) for d in set(corpus.decades.tolist()) if d >= 0)
    col = {g: corpus.genre_matrix[:, corpus.labels.index(g)] for g in labels}
    by_decade = {d: corpus.decades == d for d in decades}
    pool = []
    for n in range(1, max_genres + 1):
        for gs in combinations(labels, n):
            has = np.logical_and.reduce([col[g] for g in gs])
            for d in decades:
                size = int(np.count_nonzero(has & by_decade[d]))
                if min_answers <= size <= max_answers:
                    pool.append((gs, d))
    return pool


def _request(genres: Sequence[str], decade: int, style: str, anchor_title: str | None, short: bool = False) -> str:
    nouns = [GENRE_WORDS[g][0 if style == "literal" else 1] for g in genres]
    what = nouns[0] if len(nouns) == 1 else f"{nouns[0]} that is also {nouns[1]}"
    text = f"{what} {decade_phrase(decade, style, short)}"
    if anchor_title:
        text += f" like {anchor_title}"
    return text[0].upper() + text[1:]


def make_queries(corpus: Corpus, n: int, seed: int = 0, pool: Sequence | None = None, like_share: float = 0.3,
                 paraphrase_share: float = 0.5, min_answers: int = 3, max_answers: int = 30) -> list[Query]:
    """``n`` requests with known answers, deterministic for a ``seed``.

    Constraints are drawn without replacement from ``pool`` (default :func:`constraint_pool`;
    drawn again only once all are used), the style is a paraphrase with probability
    ``paraphrase_share``, and with probability ``like_share`` the request names an anchor film
    that satisfies the constraints (drawn by popularity when the corpus has it), which then
    leaves the answer set. Every answer satisfies the constraints; every set has at least
    ``min_answers`` items."""
    rng = np.random.default_rng(seed)
    pool = list(pool) if pool is not None else constraint_pool(corpus, min_answers, max_answers)
    if not pool:
        raise ValueError("no (genres, decade) combination has an answer set of the requested size")
    out, order = [], []
    while len(out) < n:
        if not order:
            order = list(rng.permutation(len(pool)))
        genres, decade = pool[order.pop(0)]
        genres, decade = tuple(genres), int(decade)
        answers = answer_set(corpus, genres, decade)
        style = "paraphrase" if rng.random() < paraphrase_share else "literal"
        short = bool(rng.random() < 0.5)
        anchor = None
        if rng.random() < like_share and len(answers) > min_answers:
            cand = np.asarray(sorted(answers), dtype=np.int64)
            if corpus.popularity is not None:
                p = np.asarray([corpus.popularity[corpus.position[int(i)]] for i in cand], dtype=float) + 1.0
                anchor = int(rng.choice(cand, p=p / p.sum()))
            else:
                anchor = int(rng.choice(cand))
            answers = answers - {anchor}
        if len(answers) < min_answers:
            continue
        title = corpus.title_of(anchor) if anchor is not None else None
        out.append(Query(_request(genres, decade, style, title, short), answers, genres, decade, anchor, style))
    return out


def query_sets(corpus: Corpus, n_valid: int, n_test: int, seed: int = 0, valid_share: float = 0.4,
               **kwargs) -> tuple[list[Query], list[Query]]:
    """Validation and test requests built from **disjoint** constraint pools (a weight tuned on the
    validation requests has never seen a test request's genres-and-decade)."""
    pool = constraint_pool(corpus, kwargs.pop("min_answers", 3), kwargs.pop("max_answers", 30))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(pool))
    cut = max(1, int(round(valid_share * len(pool))))
    valid_pool, test_pool = [pool[i] for i in perm[:cut]], [pool[i] for i in perm[cut:]]
    return (make_queries(corpus, n_valid, seed + 1, valid_pool, **kwargs),
            make_queries(corpus, n_test, seed + 2, test_pool, **kwargs))


# ----------------------------------------------------------------------------- 4. evaluation

def recall_at_k(retrieved: Sequence[int], relevant, k: int) -> float:
    """Share of the relevant items found in the first ``k`` retrieved (each found item counted once;
    0.0 when nothing is relevant)."""
    from ..metrics import recall_at_k as _recall
    return _recall(list(retrieved), relevant, k)


def search_queries(retriever: Retriever, queries: Sequence[Query], k: int) -> np.ndarray:
    """``(len(queries), k)`` retrieved IDs, each query's anchor excluded."""
    ids, _ = retriever.search([q.text for q in queries], k, exclude=[q.exclude for q in queries])
    return ids


def per_query(lists: Sequence[Sequence[int]], queries: Sequence[Query], k: int, metric: str = "recall") -> np.ndarray:
    """One value per query: ``"recall"`` (recall@k), ``"ndcg"`` (NDCG@k) or ``"hit"`` of a ranked list."""
    from .. import metrics
    fn = {"recall": metrics.recall_at_k, "ndcg": metrics.ndcg_at_k, "hit": metrics.hit_at_k}[metric]
    return np.asarray([fn(list(map(int, l)), q.answers, k) for l, q in zip(lists, queries)], dtype=float)


def recall_ceiling(queries: Sequence[Query], k: int) -> np.ndarray:
    """The best recall@k any ranking can reach per query: ``min(k, |answers|) / |answers|``."""
    return np.asarray([min(k, len(q.answers)) / len(q.answers) for q in queries])


def constraint_hits(lists: Sequence[Sequence[int]], queries: Sequence[Query], corpus: Corpus, k: int = 10,
                    ) -> pd.DataFrame:
    """Which constraint the top ``k`` of each list meets: per query, the share of its retrieved items
    that have every requested genre (``genres``), that fall in the requested decade (``decade``), and
    both (``both``). Tells a retriever that reads genre words from one that reads years."""
    rows = []
    for lst, q in zip(lists, queries):
        got = [int(i) for i in list(lst)[:k] if int(i) in corpus.position]
        if not got:
            rows.append({"genres": 0.0, "decade": 0.0, "both": 0.0})
            continue
        g = [set(q.genres) <= set(corpus.genres[corpus.position[i]]) for i in got]
        d = [decade_of(corpus.years[corpus.position[i]]) == q.decade for i in got]
        rows.append({"genres": float(np.mean(g)), "decade": float(np.mean(d)),
                     "both": float(np.mean([a and b for a, b in zip(g, d)]))})
    return pd.DataFrame(rows)


def tune_weight(lexical: Retriever, dense: Retriever, queries: Sequence[Query], k: int = 10,
                grid: Sequence[float] = tuple(np.round(np.linspace(0, 1, 11), 2)), method: str = "rrf",
                ) -> tuple[float, pd.DataFrame]:
    """The lexical weight of the hybrid with the best mean recall@k on ``queries`` (use
    validation queries only); ties go to the weight closest to 0.5. Returns it and the table."""
    texts, exclude = [q.text for q in queries], [q.exclude for q in queries]
    lex, den = lexical.scores(texts), dense.scores(texts)
    rows = []
    for w in grid:
        h = HybridRetriever(lexical, dense, float(w), method)
        ids, _ = topk(h.fuse(lex, den), lexical.corpus.ids, k, exclude)
        rows.append({"weight": float(w), f"recall@{k}": float(per_query(ids, queries, k).mean())})
    table = pd.DataFrame(rows)
    best = table[f"recall@{k}"].max()
    cands = table[np.isclose(table[f"recall@{k}"], best)]
    w = float(cands.iloc[np.argmin(np.abs(cands["weight"].to_numpy() - 0.5))]["weight"])
    return w, table


# ----------------------------------------------------------------------------- 5. RAG re-ranking

RAG_SYSTEM = "You are a movie recommender. You recommend exactly one movie that fits the request."


def request_prompt(lm, request: str, system: str | None = RAG_SYSTEM, prefill: str = "") -> str:
    """The chat prompt whose answer is one movie: ``"I am looking for <request>. Which movie do you
    recommend?"``; ``prefill`` starts the assistant's answer (e.g. ``'I recommend "'``)."""
    req = str(request).strip().rstrip(".") or "a good movie"
    turn = f"I am looking for {req[0].lower() + req[1:]}. Which movie do you recommend? Answer with the movie only."
    return lm.chat(turn, system=system) + prefill


def _as_id(x) -> int | None:
    """An item ID is an integer (Python or NumPy); anything else (None, a title string, a float, a
    bool) is not one."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        return None
    return int(x)


def only_retrieved(ids: Sequence, retrieved: Sequence) -> list[int]:
    """The guard between a language model and the user: keep only the integer IDs that the retriever
    returned, in the order given, each once. ``NO_ITEM`` (-1) fills, IDs that were not retrieved and
    anything that is not an integer ID (None, a title string) are dropped."""
    allowed = {i for i in map(_as_id, retrieved) if i is not None and i != NO_ITEM}
    out, seen = [], set()
    for i in map(_as_id, ids):
        if i is not None and i in allowed and i not in seen:
            seen.add(i)
            out.append(i)
    return out


def candidate_scores(lm, request: str, texts: Sequence[str], batch_size: int = 10, shared_cache: bool = True,
                     ) -> np.ndarray:
    """Mean log-probability per token of each candidate text as the answer to the request.

    With ``shared_cache`` the prompt runs once and its key-value cache serves every candidate
    (:func:`~course_lib.llm.generator.title_loglik`); otherwise each (prompt, candidate) pair runs
    in full (:func:`~course_lib.llm.scoring.sequence_logprob`, the same numbers, slower)."""
    prompt = request_prompt(lm, request)
    if shared_cache:
        from .generator import title_loglik
        return title_loglik(lm, prompt, list(texts), batch_size=batch_size)
    from .scoring import sequence_logprob
    return sequence_logprob(lm, [prompt] * len(texts), list(texts), batch_size=batch_size, mean=True)


def rerank(lm, requests: Sequence[str], retrieved: np.ndarray, corpus: Corpus, text: str = "full",
           batch_size: int = 10, threads: int | None = 1, shared_cache: bool = True) -> np.ndarray:
    """Re-order each row of ``retrieved`` (item IDs) by the LLM's likelihood of the item as the
    answer to the request; ``text="full"`` scores the verbalized item (title, year, genres),
    ``"title"`` the title and year only. The output holds the retrieved IDs and nothing else
    (checked with :func:`only_retrieved`); ``NO_ITEM`` fills stay last."""
    from .generator import torch_threads
    if text not in ("full", "title"):
        raise ValueError("text must be 'full' or 'title'")
    retrieved = np.asarray(retrieved, dtype=np.int64)
    out = np.full_like(retrieved, NO_ITEM)
    with torch_threads(threads if getattr(lm.device, "type", "cpu") == "cpu" else None):
        for r, (req, row) in enumerate(zip(requests, retrieved)):
            valid = [int(i) for i in row if int(i) != NO_ITEM]
            if not valid:
                continue
            docs = [corpus.text_of(i) if text == "full" else corpus.text_of(i).split(";")[0] for i in valid]
            s = candidate_scores(lm, req, docs, batch_size, shared_cache)
            ranked = [valid[j] for j in np.argsort(-s, kind="stable")]
            ranked = only_retrieved(ranked, row)
            out[r, : len(ranked)] = ranked
    return out


# ----------------------------------------------------------------------------- 6. free generation

ANSWER_PREFILL = 'I recommend "'


def first_title(text: str) -> str:
    """The title in a free answer that started with :data:`ANSWER_PREFILL`: everything before the
    closing quote (or the end of the first line), without a trailing year or explanation."""
    t = str(text).split('"')[0].split("\n")[0]
    t = re.split(r"\s+\((?:19|20)\d\d\)?|\s+[-–—]\s+|:\s", t)[0]
    return t.strip().strip("'“”*_ ").rstrip(".!,;")


@dataclass
class FreeAnswer:
    """One freely generated answer: the text, the title read from it, and its grounding."""
    request: str
    generated: str
    title: str
    item: int                    # NO_ITEM when the title is not in the catalog
    score: float                 # rapidfuzz similarity of the best catalog title (0-100)
    fits: bool = False           # the grounded item satisfies the request
    extra: dict = field(default_factory=dict)


def free_generation(lm, queries: Sequence[Query], corpus: Corpus, max_new_tokens: int = 16, threads: int | None = 1,
                    batch_size: int = 4, threshold: float | None = None) -> list[FreeAnswer]:
    """Ask the LLM for one movie per request with no retrieval (greedy, ``max_new_tokens``; the answer
    is started with :data:`ANSWER_PREFILL`, so the model writes a title), read the title and ground it to the catalog with rapidfuzz (:func:`~course_lib.llm.generator.ground`)."""
    from . import generator as G
    prompts = [request_prompt(lm, q.text, prefill=ANSWER_PREFILL) for q in queries]
    texts = G.generate(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, threads=threads)
    index = G.TitleIndex.from_titles(corpus.ids.tolist(), corpus.titles)
    titles = [first_title(t) for t in texts]
    matches = G.ground(titles, index, threshold if threshold is not None else G.THRESHOLD)
    return [FreeAnswer(q.text, t, title, m.item, m.score, m.item != NO_ITEM and m.item in q.answers)
            for q, t, title, m in zip(queries, texts, titles, matches)]


def out_of_catalog_rate(ids: Sequence[int], corpus: Corpus) -> float:
    """Share of returned IDs that are no catalog item (``NO_ITEM`` or unknown); nan when empty."""
    ids = [int(i) for i in ids]
    if not ids:
        return float("nan")
    return float(np.mean([i not in corpus.position for i in ids]))
