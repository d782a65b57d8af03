r"""Knowledge injection: teach an LLM recommender what its pretraining did not show it.

An LLM recommender knows about items only what its pretraining text said about them. The
idea of knowledge injection (Petruzzelli et al., UMAP 2025) is to write domain knowledge
as plain sentences (**lexicalization**) and to fine-tune on those sentences together with
the recommendation examples, so the model reads the knowledge the way it read its
pretraining corpus. Three sources, each item's facts wrapped in begin/end markers
(``<knowledge> ... </knowledge>``) so the model can tell injected facts from a task:

* **text** (:meth:`KnowledgeBase.text_facts`): the catalog's metadata as a sentence
  (:func:`~course_lib.llm.verbalize.item_text`: title, year, genres);
* **kg** (:meth:`KnowledgeBase.kg_facts`): the knowledge graph shipped with ml-100k
  (:func:`course_lib.data.load_kg`, Freebase IDs only): an entity shared by two movies
  becomes ``"Heat and Casino share the same actor."`` (:func:`kg_sentence`), relation names
  made readable (:func:`relation_name`), never an ID;
* **collab** (:meth:`KnowledgeBase.collab_facts`): co-occurrence of liked items among the
  **training** users only: ``"People who like Heat also tend to like Casino and Fargo."``
  (:func:`collab_sentence`), neighbours ranked by cosine of the co-like counts.

The task is **candidate ranking** (:func:`ranking_cases`): per user, the last liked movie
hidden among popularity-sampled negatives the user never rated; users are split into
training, validation and test users (:func:`split_users`), nothing about a validation or
test user is seen in training. The recommendation examples are "recommend one movie" prompts
answered with the held-out title (:func:`rec_examples`), the knowledge examples ask about a
movie and are answered with its ``<knowledge>`` block (:func:`knowledge_examples`). Each
fine-tuned model ranks the candidates by the likelihood of their titles
(:class:`~course_lib.llm.generator.LLMRanker`, reused through :class:`FixedCandidates`), and
:func:`evaluate_rankings` gives P@5, R@5, NDCG@5 (:mod:`course_lib.metrics`) and AvgPop@5
(:func:`avgpop_at_k`) per user.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..models.base import Recommender
from .verbalize import UNKNOWN_TITLE, clean_title, item_text

BEGIN, END = "<knowledge>", "</knowledge>"
SOURCES = ("none", "text", "kg", "collab")
"""The fine-tuning variants: recommendation examples only, or with one knowledge source."""

RELATIONS = {
    "film.film.directed_by": "director",
    "film.film.written_by": "screenwriter",
    "film.film.produced_by": "producer",
    "film.film.cinematography": "cinematographer",
    "film.film.actor": "actor",
    "film.film.production_companies": "production company",
    "film.film.award_won": "award",
    "film.film.award_nomination": "award nomination",
    "film.film.subjects": "subject",
    "film.film.genre": "genre",
    "film.film.country": "country of origin",
    "film.film.language": "language",
    "film.film.rating": "content rating",
    "catalog.genres_and_year": "genres and release year",
    "catalog.genres": "genres",
}
"""Readable nouns of ml-100k's film relations (Freebase ``type.type.property`` names)."""

INFORMATIVE = ("film.film.directed_by", "film.film.written_by", "film.film.cinematography", "film.film.produced_by",
               "film.film.subjects", "film.film.award_won", "film.film.production_companies", "film.film.actor")
"""Relations used for facts, most telling first. Country, language, content rating and Freebase's
genres are shared by hundreds of movies each (a million pairs): they say almost nothing."""

SEQUEL = "film.film.sequel"
_FREEBASE = re.compile(r"^[mg]\.[0-9a-z_]+$")
CATALOG_RELATIONS = ("catalog.genres_and_year", "catalog.genres")
"""The relations of :func:`catalog_kg`, most specific first."""


# ============================================================================= lexicalization

def relation_name(relation: str) -> str:
    """The readable noun of a KG relation: ``"film.film.directed_by"`` -> ``"director"``.

    A relation not in :data:`RELATIONS` is read from its last part (``"film.film.music"`` ->
    ``"music"``, underscores as spaces, a leading ``"by"`` dropped)."""
    if not isinstance(relation, str) or not relation.strip():
        raise ValueError(f"a relation must be a non-empty string such as 'film.film.directed_by', got {relation!r}")
    rel = relation.strip()
    if rel in RELATIONS:
        return RELATIONS[rel]
    last = rel.rsplit(".", 1)[-1].replace("_", " ").strip()
    last = re.sub(r"\s+by$", "", last).strip()
    if not last:
        raise ValueError(f"cannot read a noun out of the relation {relation!r}")
    return last


def kg_sentence(title_a, relation: str, title_b, entity: str | None = None) -> str:
    """One KG fact as a sentence. Two movies sharing an entity (both have ``relation`` to it):
    ``"Heat and Casino share the same actor."``, or with the entity's readable name
    ``"Heat and Casino share the same genres (crime, thriller)."``; the sequel relation:
    ``"B is the sequel to A."``.

    Titles are cleaned (:func:`~course_lib.llm.verbalize.clean_title`); a movie cannot share
    something with itself (ValueError). An entity that looks like a Freebase ID (``m.0bln8``)
    is never written: an ID means nothing to a reader or a model."""
    a, b = clean_title(title_a), clean_title(title_b)
    if a == b:
        raise ValueError(f"a fact needs two different movies, got {a!r} twice")
    if isinstance(relation, str) and relation.strip() == SEQUEL:
        return f"{b} is the sequel to {a}."
    noun = relation_name(relation)
    if entity is not None and str(entity).strip() and not _FREEBASE.match(str(entity).strip()):
        return f"{a} and {b} share the same {noun} ({str(entity).strip()})."
    return f"{a} and {b} share the same {noun}."


def join_titles(titles: Sequence[str]) -> str:
    """``"A"``, ``"A and B"``, ``"A, B and C"`` (titles cleaned)."""
    t = [clean_title(x) for x in titles]
    if not t:
        raise ValueError("nothing to list: give at least one title")
    return t[0] if len(t) == 1 else ", ".join(t[:-1]) + " and " + t[-1]


def collab_sentence(title, others: Sequence[str]) -> str:
    """A co-occurrence fact: ``"People who like Heat also tend to like Casino and Fargo."``.

    ``others`` (at least one) are the movies most often liked together with ``title``, best
    first; the movie itself may not be among them."""
    x = clean_title(title)
    others = list(others)
    if not others:
        raise ValueError(f"no co-liked movie given for {x!r}: a co-occurrence fact needs at least one")
    if any(clean_title(o) == x for o in others):
        raise ValueError(f"{x!r} is listed as co-liked with itself")
    return f"People who like {x} also tend to like {join_titles(others)}."


def wrap(sentences: Iterable[str]) -> str:
    """Facts between the markers: ``"<knowledge> s1 s2 </knowledge>"``."""
    s = [x.strip() for x in sentences if x and x.strip()]
    if not s:
        raise ValueError("no facts to wrap")
    return f"{BEGIN} {' '.join(s)} {END}"


# ============================================================================= the knowledge base

def kg_pairs(triples: pd.DataFrame, links: pd.DataFrame, relations: Sequence[str] | None = None,
             max_group: int = 12, seed: int = 0) -> pd.DataFrame:
    """Pairs of movies linked through the KG: ``item_a``, ``item_b``, ``relation``, ``entity``.

    A pair shares an entity when both movies have ``relation`` to it (the same director). In a
    group of at most ``max_group`` movies every pair is a fact; a bigger group (a prolific actor,
    the dramas of 1996) would link almost everything, so each of its movies is paired with
    ``max_group // 2`` others along a seeded random cycle. ``relations=None`` takes every
    relation. Sequels link two movies directly (``item_a`` comes first)."""
    for frame, cols in ((triples, {"head", "relation", "tail"}), (links, {"item", "entity"})):
        if not cols <= set(frame.columns):
            raise ValueError(f"expected columns {sorted(cols)}, got {list(frame.columns)}: use course_lib.data.load_kg()")
    if max_group < 2:
        raise ValueError(f"max_group must be >= 2, got {max_group}")
    rng = np.random.default_rng(seed)
    ent2item = dict(zip(links["entity"], links["item"].astype(np.int64)))
    t = triples[triples["head"].isin(ent2item)]
    keep = t["relation"] != SEQUEL if relations is None else t["relation"].isin(list(relations))
    shared = t[keep].assign(item=lambda d: d["head"].map(ent2item)).drop_duplicates(["relation", "tail", "item"])
    rows = []
    for (rel, ent), g in shared.groupby(["relation", "tail"], sort=True):
        m = np.sort(g["item"].to_numpy(np.int64))
        if len(m) < 2:
            continue
        if len(m) <= max_group:
            ia, ib = np.triu_indices(len(m), k=1)
            pa, pb = m[ia], m[ib]
        else:
            m = rng.permutation(m)
            steps = np.arange(1, max_group // 2 + 1)
            pa = np.repeat(m, len(steps))
            pb = m[(np.repeat(np.arange(len(m)), len(steps)) + np.tile(steps, len(m))) % len(m)]
        rows.append(pd.DataFrame({"item_a": np.minimum(pa, pb), "item_b": np.maximum(pa, pb),
                                  "relation": rel, "entity": ent}))
    if relations is None or SEQUEL in relations:
        seq = t[(t["relation"] == SEQUEL) & t["tail"].isin(ent2item)]
        rows.append(pd.DataFrame({"item_a": seq["head"].map(ent2item), "item_b": seq["tail"].map(ent2item),
                                  "relation": SEQUEL, "entity": seq["tail"]}))
    cols = ["item_a", "item_b", "relation", "entity"]
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)
    out = out[out["item_a"] != out["item_b"]].drop_duplicates(cols)
    return out.astype({"item_a": "int64", "item_b": "int64"}).reset_index(drop=True)


def catalog_kg(items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small knowledge graph built from the catalog's own metadata, in :func:`course_lib.data.load_kg`'s
    format: each movie (entity ``item:<id>``) points to its genre combination (``"crime, thriller"``,
    relation ``catalog.genres``, only for two genres or more) and to that combination with its
    release year (``"crime, thriller; 1995"``, relation ``catalog.genres_and_year``). Entities are
    readable, so a fact can name them. Movies without genres (or without a title) get no entity."""
    from .verbalize import UNKNOWN_TITLE, _genres, clean_year
    heads, rels, tails, link_items = [], [], [], []
    for it, title, year, genres in zip(items["item"], items["title"], items.get("year", [None] * len(items)),
                                       items.get("genres", [None] * len(items))):
        g = sorted(x.lower() for x in _genres(genres))
        if not g or clean_title(title) == UNKNOWN_TITLE:
            continue
        ent, combo, y = f"item:{int(it)}", ", ".join(g), clean_year(year)
        link_items.append(int(it))
        if len(g) >= 2:
            heads.append(ent), rels.append("catalog.genres"), tails.append(combo)
        if y is not None:
            heads.append(ent), rels.append("catalog.genres_and_year"), tails.append(f"{combo}; {y}")
    triples = pd.DataFrame({"head": heads, "relation": rels, "tail": tails})
    links = pd.DataFrame({"item": np.asarray(link_items, dtype=np.int64), "entity": [f"item:{i}" for i in link_items]})
    return triples, links


def sequel_check(triples: pd.DataFrame, links: pd.DataFrame, titles: dict, n: int = 8) -> pd.DataFrame:
    """The KG's sequel facts between two linked movies, with their catalog titles: a quick test
    that the links point where they claim (a sequel should look like one)."""
    ent2item = dict(zip(links["entity"], links["item"].astype(np.int64)))
    s = triples[(triples["relation"] == SEQUEL) & triples["head"].isin(ent2item) & triples["tail"].isin(ent2item)]
    out = pd.DataFrame({"item": s["head"].map(ent2item), "sequel": s["tail"].map(ent2item)}).sort_values(["item", "sequel"])
    out["title"] = out["item"].map(lambda i: clean_title(titles.get(int(i))))
    out["its sequel, says the KG"] = out["sequel"].map(lambda i: clean_title(titles.get(int(i))))
    return out.head(n).reset_index(drop=True)


def cooccurrence(liked: pd.DataFrame, n_items: int, min_count: int = 3) -> np.ndarray:
    """``(n_items + 1, n_items + 1)`` cosine of co-like counts, ``C[x, y] / sqrt(n_x n_y)``
    (0 on the diagonal and where fewer than ``min_count`` users liked both).

    ``liked`` holds the ``(user, item)`` likes of the **training users only**: a test user's
    likes must not leak into the knowledge the model is taught."""
    import scipy.sparse as sp
    u = liked["user"].to_numpy()
    _, rows = np.unique(u, return_inverse=True)
    items = liked["item"].to_numpy(np.int64)
    if len(items) and (items.min() < 1 or items.max() > n_items):
        raise ValueError(f"item IDs must lie in 1..{n_items}")
    M = sp.csr_matrix((np.ones(len(items), dtype=np.float32), (rows, items)), shape=(rows.max() + 1 if len(rows) else 0,
                                                                                     n_items + 1))
    M.data[:] = 1.0
    C = (M.T @ M).toarray()
    n = np.diag(C).copy()
    C[C < min_count] = 0.0
    np.fill_diagonal(C, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = C / np.sqrt(np.outer(n, n))
    return np.nan_to_num(cos, nan=0.0, posinf=0.0)


@dataclass
class KnowledgeBase:
    """The three knowledge sources over one catalog (``titles[i]``: title of item ``i``; 0 unused).

    ``items`` is the catalog frame (``item``, ``title``, ``year``, ``genres``), ``pairs`` the KG
    pairs (:func:`kg_pairs`), ``cooc`` the training users' co-like cosine (:func:`cooccurrence`)."""
    items: pd.DataFrame
    pairs: pd.DataFrame
    cooc: np.ndarray
    max_facts: int = 3
    titles: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.titles = dict(zip(self.items["item"].astype(int), self.items["title"]))
        self._row = self.items.set_index("item")
        rank = {r: i for i, r in enumerate(CATALOG_RELATIONS + INFORMATIVE + (SEQUEL,))}
        p = self.pairs.assign(rank=self.pairs["relation"].map(rank).fillna(len(rank)))
        # each pair listed under both movies; ``first`` keeps a sequel fact's direction
        both = pd.concat([p.assign(item=p["item_a"], other=p["item_b"], first=p["item_a"]),
                          p.assign(item=p["item_b"], other=p["item_a"], first=p["item_a"])], ignore_index=True)
        self._kg = {int(i): g.sort_values(["rank", "other"]) for i, g in both.groupby("item")}

    def _title(self, item: int) -> str:
        if int(item) not in self.titles:
            raise KeyError(f"item {item} is not in the catalog")
        return self.titles[int(item)]

    def text_facts(self, item: int) -> list[str]:
        """``["Heat (1995); genres: action, crime, thriller."]``."""
        r = self._row.loc[int(item)] if int(item) in self.titles else None
        if r is None:
            raise KeyError(f"item {item} is not in the catalog")
        return [item_text(r["title"], r.get("year"), r.get("genres")) + "."]

    def kg_facts(self, item: int) -> list[str]:
        """Up to ``max_facts`` KG sentences about ``item``, most telling relation first, at most one
        per other movie; ``[]`` when the movie has no KG entity or shares nothing informative."""
        g = self._kg.get(int(item))
        if g is None or clean_title(self._title(item)) == UNKNOWN_TITLE:
            return []
        out, used = [], set()
        for _, r in g.iterrows():
            other = int(r["other"])
            if other in used or other not in self.titles or clean_title(self.titles[other]) == clean_title(self._title(item)):
                continue
            used.add(other)
            if clean_title(self.titles[other]) == UNKNOWN_TITLE:
                continue
            if r["relation"] == SEQUEL:
                a, b = (int(item), other) if int(r["first"]) == int(item) else (other, int(item))
                out.append(kg_sentence(self._title(a), SEQUEL, self._title(b)))
            else:
                out.append(kg_sentence(self._title(item), r["relation"], self.titles[other], r["entity"]))
            if len(out) >= self.max_facts:
                break
        return out

    def collab_facts(self, item: int) -> list[str]:
        """One co-occurrence sentence naming the ``max_facts`` movies most co-liked with ``item``
        (training users only); ``[]`` when no movie passes the support threshold."""
        row = self.cooc[int(item)] if 0 < int(item) < len(self.cooc) else np.zeros(0)
        mine = clean_title(self._title(item))
        order = [int(j) for j in np.argsort(-row, kind="stable") if row[j] > 0]
        if mine == UNKNOWN_TITLE:
            return []
        others = [j for j in order if j in self.titles and clean_title(self.titles[j]) not in (mine, UNKNOWN_TITLE)]
        others = others[: self.max_facts]
        return [collab_sentence(self._title(item), [self.titles[j] for j in others])] if others else []

    def facts(self, source: str, item: int) -> list[str]:
        """The sentences of ``source`` (``"text"``, ``"kg"``, ``"collab"``) about ``item``."""
        if source == "text":
            return self.text_facts(item)
        if source == "kg":
            return self.kg_facts(item)
        if source == "collab":
            return self.collab_facts(item)
        raise ValueError(f"source must be one of {SOURCES[1:]}, got {source!r}")

    def block(self, source: str, item: int) -> str | None:
        """``"<knowledge> ... </knowledge>"`` about ``item``, or None when the source knows nothing of it."""
        f = self.facts(source, item)
        return wrap(f) if f else None

    def coverage(self, items: Iterable[int]) -> pd.Series:
        """Share of ``items`` each source has at least one fact about."""
        items = [int(i) for i in items]
        return pd.Series({s: float(np.mean([bool(self.facts(s, i)) for i in items])) if items else float("nan")
                          for s in SOURCES[1:]})


# ============================================================================= the ranking task

@dataclass
class RankingCase:
    """One user's candidate-ranking problem: rank ``candidates`` (the liked ``target`` hidden among
    negatives the user never rated) given the liked ``history`` (time order, oldest first)."""
    user: int
    history: np.ndarray
    target: int
    candidates: np.ndarray


def split_users(users: Sequence[int], valid_frac: float = 0.15, test_frac: float = 0.15,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training, validation and test users: a random partition (the split is by users)."""
    if not (0 < valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError("valid_frac and test_frac must be in (0, 1) and sum to less than 1")
    u = np.random.default_rng(seed).permutation(np.unique(np.asarray(users, dtype=np.int64)))
    n_va, n_te = int(round(len(u) * valid_frac)), int(round(len(u) * test_frac))
    return np.sort(u[n_va + n_te:]), np.sort(u[:n_va]), np.sort(u[n_va: n_va + n_te])


def popularity_of(ratings: pd.DataFrame, n_items: int) -> np.ndarray:
    """Ratings per item (length ``n_items + 1``, entry 0 unused), from the frame given (training users)."""
    items = ratings["item"].to_numpy(np.int64)
    return np.bincount(items, minlength=n_items + 1)[: n_items + 1].astype(float)


def ranking_cases(ratings: pd.DataFrame, users: Sequence[int], popularity: np.ndarray, n_negatives: int = 9,
                  like: float = 4.0, min_liked: int = 5, max_history: int = 10, seed: int = 0,
                  ) -> tuple[list[RankingCase], dict]:
    """One :class:`RankingCase` per user of ``users``: the last liked movie (rating >= ``like``) is
    the target, the ``max_history`` liked before it the history, and ``n_negatives`` movies the
    user never rated, drawn in proportion to ``popularity`` (so that "popular" alone cannot find
    the target), join it in a shuffled candidate list.

    Users with fewer than ``min_liked`` likes are skipped and counted: returns ``(cases, skipped)``
    with ``skipped = {"too_few_likes": n, "unknown_user": n}``."""
    need = {"user", "item", "rating", "timestamp"} - set(ratings.columns)
    if need:
        raise ValueError(f"ratings needs columns user, item, rating, timestamp; missing {sorted(need)}")
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    if min_liked < 2:
        raise ValueError("min_liked must be >= 2: a case needs a history and a target")
    rng = np.random.default_rng(seed)
    n_items = len(popularity) - 1
    by_user = {int(u): g for u, g in ratings.sort_values(["user", "timestamp", "item"], kind="mergesort").groupby("user")}
    cases, skipped = [], {"too_few_likes": 0, "unknown_user": 0}
    for u in np.asarray(users, dtype=np.int64):
        g = by_user.get(int(u))
        if g is None:
            skipped["unknown_user"] += 1
            continue
        liked = g.loc[g["rating"] >= like, "item"].to_numpy(np.int64)
        if len(liked) < min_liked:
            skipped["too_few_likes"] += 1
            continue
        target, history = int(liked[-1]), liked[:-1][-max_history:]
        allowed = np.ones(n_items + 1, dtype=bool)
        allowed[0] = False
        allowed[g["item"].to_numpy(np.int64)] = False
        ok = np.flatnonzero(allowed)
        w = np.asarray(popularity, dtype=float)[ok] + 1.0
        neg = rng.choice(ok, size=min(n_negatives, len(ok)), replace=False, p=w / w.sum())
        cands = rng.permutation(np.r_[neg, target]).astype(np.int64)
        cases.append(RankingCase(int(u), history, target, cands))
    return cases, skipped


# ============================================================================= fine-tuning data

def rec_examples(lm, cases: Sequence[RankingCase], titles: dict, max_items: int = 10) -> list[tuple[str, str]]:
    """``(prompt, answer)`` recommendation examples: the chat prompt that
    :class:`~course_lib.llm.generator.LLMRanker` scores with ("recommend one movie" after the
    history), answered by the target's clean title (so training and ranking read the same prompt)."""
    from .generator import chat_prompt, describe_history, one_movie_prompt
    out = []
    for c in cases:
        user = describe_history([titles[int(i)] for i in c.history], max_items)
        out.append((chat_prompt(lm, one_movie_prompt(user)), clean_title(titles[int(c.target)])))
    return out


def knowledge_question(title) -> str:
    """The question a knowledge example answers: ``"What do you know about the movie Heat?"``."""
    return f"What do you know about the movie {clean_title(title)}?"


def knowledge_examples(lm, kb: KnowledgeBase, source: str, items: Iterable[int]) -> tuple[list[tuple[str, str]], int]:
    """``(prompt, answer)`` pairs teaching ``source``'s facts about ``items`` (question ->
    ``<knowledge>`` block), and the number of items skipped because the source knows nothing
    about them (a movie with no KG entity, one nobody co-liked). ``"none"`` gives no examples."""
    from .generator import chat_prompt
    if source == "none":
        return [], 0
    out, skipped = [], 0
    for i in items:
        b = kb.block(source, int(i))
        if b is None:
            skipped += 1
            continue
        out.append((chat_prompt(lm, knowledge_question(kb.titles[int(i)])), b))
    return out, skipped


def knowledge_items(cases: Sequence[RankingCase], n: int, seed: int = 0) -> np.ndarray:
    """The ``n`` movies to teach facts about: the movies of the cases' candidate lists and
    histories, most frequent first (ties in random order), so the facts concern what is ranked."""
    ids = np.concatenate([np.r_[c.candidates, c.history] for c in cases]) if cases else np.zeros(0, np.int64)
    items, counts = np.unique(ids.astype(np.int64), return_counts=True)
    tie = np.random.default_rng(seed).random(len(items))
    return items[np.lexsort((tie, -counts))][:n]


# ============================================================================= ranking and metrics

class FixedCandidates(Recommender):
    """A "retriever" that returns each user's fixed candidate list (``candidates[user]``): it lets
    :class:`~course_lib.llm.generator.LLMRanker` re-rank exactly the evaluation's candidates.
    Candidates score 1, everything else ``-inf``."""

    name = "fixed candidates"

    def __init__(self, candidates: dict, n_items: int):
        self.candidates, self.n_items = {int(u): np.asarray(c, dtype=np.int64) for u, c in candidates.items()}, n_items

    def fit(self, split=None, **kwargs) -> "FixedCandidates":
        return self

    def score(self, users, histories):
        out = np.full((len(users), self.n_items + 1), -np.inf, dtype=np.float32)
        for r, u in enumerate(np.asarray(users, dtype=np.int64)):
            if int(u) not in self.candidates:
                raise KeyError(f"user {int(u)} has no candidate list")
            out[r, self.candidates[int(u)]] = 1.0
        return out


def rank_candidates(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The candidates sorted by score, best first (ties: the earlier candidate first)."""
    s, c = np.asarray(scores, dtype=float), np.asarray(candidates, dtype=np.int64)
    if s.shape != c.shape:
        raise ValueError(f"{s.shape} scores for {c.shape} candidates")
    return c[np.argsort(-s, kind="stable")]


def avgpop_at_k(ranked: Sequence[int], popularity, k: int) -> float:
    """Mean popularity of the first ``k`` items of ``ranked`` (AvgPop@k). ``popularity[i]`` is item
    ``i``'s training count; fills (IDs < 1) are ignored; ``nan`` when no real item is left."""
    from ..metrics import average_popularity
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return average_popularity(np.asarray(list(ranked)[:k], dtype=np.int64), popularity)


def evaluate_rankings(ranked: Sequence[Sequence[int]], cases: Sequence[RankingCase], popularity: np.ndarray,
                      k: int = 5) -> pd.DataFrame:
    """Per-user P@k, R@k, NDCG@k (one relevant item: the target) and AvgPop@k of ranked candidate lists."""
    from ..metrics import ndcg_at_k, precision_at_k, recall_at_k
    if len(ranked) != len(cases):
        raise ValueError(f"{len(ranked)} rankings for {len(cases)} cases")
    rows = []
    for r, c in zip(ranked, cases):
        rel = {int(c.target)}
        rows.append({"user": c.user, f"P@{k}": precision_at_k(list(r), rel, k), f"R@{k}": recall_at_k(list(r), rel, k),
                     f"NDCG@{k}": ndcg_at_k(list(r), rel, k), f"AvgPop@{k}": avgpop_at_k(r, popularity, k)})
    return pd.DataFrame(rows)


def score_cases(model: Recommender, cases: Sequence[RankingCase], fold_in: bool = True) -> list[np.ndarray]:
    """Rank each case's candidates with a course recommender (``score(users, histories)``); with
    ``fold_in`` every user is scored as a new user (ID 0) from the history alone, as a model
    trained on other users must."""
    out = []
    for c in cases:
        users = np.array([0 if fold_in else c.user])
        s = np.asarray(model.score(users, [c.history]), dtype=float)[0]
        out.append(rank_candidates(s[c.candidates], c.candidates))
    return out


def llm_rankings(ranker, cases: Sequence[RankingCase], progress: bool = False) -> list[np.ndarray]:
    """Rank each case's candidates with an :class:`~course_lib.llm.generator.LLMRanker` whose
    retriever is a :class:`FixedCandidates` of the same cases."""
    from tqdm.auto import tqdm
    out = []
    for c in tqdm(cases, desc="ranking", unit="user", disable=not progress):
        s = ranker.score(np.array([c.user]), [c.history])[0]
        out.append(rank_candidates(s[c.candidates], c.candidates))
    return out


# ============================================================================= fine-tuning one adapter per source

@dataclass
class SourceRun:
    """One fine-tuned variant: its source, how many examples of each kind it trained on, the
    training record (:class:`~course_lib.llm.tuning.TuneResult`) and its rankings of the cases."""
    source: str
    n_rec: int
    n_knowledge: int
    skipped_items: int
    tune: object
    rankings: list
    taught_before: np.ndarray = field(default_factory=lambda: np.zeros(0))
    taught_after: np.ndarray = field(default_factory=lambda: np.zeros(0))
    heldout_before: np.ndarray = field(default_factory=lambda: np.zeros(0))
    heldout_after: np.ndarray = field(default_factory=lambda: np.zeros(0))


def answer_loglik(lm, pairs: Sequence[tuple[str, str]], batch_size: int = 2) -> np.ndarray:
    """Mean log-probability per token of each answer given its prompt: how well the model "knows"
    a fact (higher is better; :func:`~course_lib.llm.scoring.sequence_logprob` with ``mean=True``)."""
    from .scoring import sequence_logprob
    if not pairs:
        return np.zeros(0)
    return sequence_logprob(lm, [p for p, _ in pairs], [a for _, a in pairs], batch_size=batch_size, mean=True)


def tuned_view(lm, peft_model):
    """The course's ``LM`` around a LoRA-wrapped model, for the scorers of :mod:`~course_lib.llm.generator`.

    peft's wrapper hides the base model's ``forward`` signature, from which
    :func:`~course_lib.llm.generator.title_loglik` reads how to pass its key-value cache; the
    base model (whose layers carry the adapters) exposes it, so the scores use the adapters."""
    from .models import LM
    return LM(peft_model.get_base_model(), lm.tokenizer, lm.device, f"{lm.name} + LoRA", lm.load_s)


def run_source(lm, source: str, rec_pairs: Sequence[tuple[str, str]], know_pairs: Sequence[tuple[str, str]],
               titles: Sequence[str], cases: Sequence[RankingCase], settings=None, skipped_items: int = 0,
               heldout_pairs: Sequence[tuple[str, str]] = (), progress: bool = False) -> SourceRun:
    """Fine-tune fresh LoRA adapters on the recommendation examples plus ``source``'s knowledge
    examples (shuffled together), rank every case's candidates by title likelihood, and remove
    the adapters again (``lm.model`` is left as it was).

    Whether the facts went in is measured too: the per-token log-likelihood of the taught
    knowledge answers, and of ``heldout_pairs`` (the same source's facts about other movies,
    never trained on), before and after tuning.

    ``titles[i]`` is item ``i``'s title (index 0 unused), as :class:`~course_lib.llm.generator.LLMRanker`
    reads them. Training is :func:`~course_lib.llm.tuning.train_lora` (micro-batches, gradient
    accumulation, loss on the answer tokens only)."""
    import warnings
    from .generator import LLMRanker
    from .tuning import LoraSettings, add_lora, remove_lora, train_lora
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not rec_pairs:
        raise ValueError("no recommendation examples: every variant trains on the task itself")
    settings = settings or LoraSettings(epochs=1)
    pairs = list(rec_pairs) + list(know_pairs)
    peft = add_lora(lm.model, settings)
    try:
        peft.eval()                       # no LoRA dropout while measuring
        view = tuned_view(lm, peft)
        taught0, held0 = answer_loglik(view, know_pairs), answer_loglik(view, heldout_pairs)  # B = 0: the base model
        with warnings.catch_warnings():   # library advisories during training, not the lesson's output
            warnings.simplefilter("ignore")
            tune = train_lora(peft, lm.tokenizer, [p for p, _ in pairs], [a for _, a in pairs], settings,
                              progress=progress)
        n_cand = max(len(c.candidates) for c in cases) if cases else 1
        ranker = LLMRanker(view, titles, FixedCandidates({c.user: c.candidates for c in cases},
                                                                         len(titles) - 1),
                           n_candidates=n_cand, method="likelihood", threads=None)
        rankings = llm_rankings(ranker, cases, progress=progress)
        taught1, held1 = answer_loglik(view, know_pairs), answer_loglik(view, heldout_pairs)
    finally:
        lm.model = remove_lora(peft)
    return SourceRun(source, len(rec_pairs), len(know_pairs), skipped_items, tune, rankings,
                     taught0, taught1, held0, held1)


def zero_shot_rankings(lm, titles: Sequence[str], cases: Sequence[RankingCase], progress: bool = False) -> list:
    """The base model's rankings (no fine-tuning): what pretraining alone knows."""
    from .generator import LLMRanker
    n_cand = max(len(c.candidates) for c in cases) if cases else 1
    ranker = LLMRanker(lm, titles, FixedCandidates({c.user: c.candidates for c in cases}, len(titles) - 1),
                       n_candidates=n_cand, method="likelihood", threads=None)
    return llm_rankings(ranker, cases, progress=progress)


def title_list(items: pd.DataFrame) -> list[str]:
    """``titles[i]`` = title of item ``i`` (0: empty), the list :class:`~course_lib.llm.generator.LLMRanker` reads."""
    n = int(items["item"].max())
    out = [""] * (n + 1)
    for i, t in zip(items["item"].astype(int), items["title"]):
        out[i] = t
    return out


def training_split(ratings: pd.DataFrame, users: Sequence[int], n_items: int):
    """A :class:`~course_lib.prep.Split` of the training users' ratings (every rating as an
    interaction), items keeping their own IDs ``1..n_items``, for the course's ID models (BPR-MF):
    they are trained on these users only and score a validation or test user by folding in the
    user's history (user ID 0)."""
    from ..prep import IdMap, Split, _sort_by_time
    r = ratings[ratings["user"].isin(np.asarray(users))]
    if r.empty:
        raise ValueError("none of the given users has a rating")
    umap = IdMap.fit(r["user"])
    train = r.assign(user=umap.encode(r["user"]))
    train = _sort_by_time(train).reset_index(drop=True)
    empty = train.iloc[:0]
    return Split(train, empty, empty, len(umap), n_items, umap, IdMap(np.arange(1, n_items + 1)), kind="by users")
