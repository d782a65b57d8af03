"""course_lib.llm.conductor, retrieval part: retrievers on a tiny catalog, fusion by hand, queries
with known answers, recall@k against brute force, the "only retrieved items" guard, re-ranking's
contract. No real model runs here: a fake embedding and a tiny random Llama stand in."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from course_lib import metrics
from course_lib.llm import conductor as C

from llm_fakes import tiny_lm as make_tiny_lm

pytestmark = pytest.mark.unit

ITEMS = pd.DataFrame({
    "item": [1, 2, 3, 4, 5, 6, 7, 8],
    "title": ["Ghostbusters", "Toy Story", "Alien", "Usual Suspects, The", "Casablanca", "Airplane!",
              "Aliens", "Heat"],
    "year": [1984, 1995, 1979, 1995, 1942, 1980, 1986, 1995],
    "genres": [["Comedy", "Horror"], ["Animation", "Children's", "Comedy"], ["Horror", "Sci-Fi"],
               ["Crime", "Thriller"], ["Drama", "Romance", "War"], ["Comedy"], ["Action", "Sci-Fi"],
               ["Action", "Crime", "Thriller"]],
})


@pytest.fixture(scope="module")
def corpus():
    return C.catalog_corpus(ITEMS, popularity={1: 50, 2: 90, 3: 30})


VOCAB = sorted({t for text in C.catalog_corpus(ITEMS).texts for t in C.tokenize(text)})


def fake_embed(texts):
    """Bag of words over the catalog's vocabulary: a stand-in for a sentence encoder."""
    out = np.zeros((len(texts), len(VOCAB)), dtype=np.float32)
    for r, t in enumerate(texts):
        for w in C.tokenize(t):
            if w in VOCAB:
                out[r, VOCAB.index(w)] += 1.0
    return out


class Fixed(C.Retriever):
    """A retriever with given scores (one row per query, whatever the query)."""
    def __init__(self, corpus, rows):
        self.corpus, self.rows, self.name = corpus, np.asarray(rows, dtype=float), "fixed"

    def scores(self, queries):
        return self.rows[: len(queries)]


# ----------------------------------------------------------------------------- corpus and retrievers

def test_corpus_texts_are_the_cached_verbalization(corpus):
    from course_lib.llm.verbalize import item_texts
    assert corpus.texts == item_texts(ITEMS).tolist()
    assert corpus.text_of(4) == "The Usual Suspects (1995); genres: crime, thriller"
    assert corpus.title_of(4) == "The Usual Suspects" and corpus.years[0] == 1984
    assert corpus.genres[1] == ("Animation", "Children's", "Comedy")
    assert corpus.popularity.tolist() == [50, 90, 30, 0, 0, 0, 0, 0]


def test_tokenize_drops_stop_words_and_splits_hyphens():
    assert C.tokenize("A Sci-Fi movie from the 80s, like Alien!") == ["sci", "fi", "80s", "alien"]
    assert C.tokenize("") == []


def test_bm25_finds_the_item_with_the_exact_word(corpus):
    bm = C.BM25Retriever(corpus)
    ids, scores = bm.search(["something like ghostbusters", "a war drama", "casablanca"], k=3)
    assert ids.shape == scores.shape == (3, 3)
    assert ids[0, 0] == 1 and ids[1, 0] == 5 and ids[2, 0] == 5
    assert np.all(np.diff(scores, axis=1) <= 0), "best first"
    # a rarer word weighs more: "alien" (1 item) beats "comedy" (3 items) in a two-word query
    s = bm.scores(["alien comedy"])[0]
    assert s[corpus.position[3]] > s[corpus.position[6]] > 0


def test_bm25_on_queries_with_no_known_word_returns_zeros_not_an_error(corpus):
    bm = C.BM25Retriever(corpus)
    s = bm.scores(["", "une comédie française", "!!!"])
    assert s.shape == (3, len(corpus)) and not s.any()
    ids, _ = bm.search("", k=4)
    assert ids.shape == (1, 4) and set(ids[0]) <= set(corpus.ids.tolist())


def test_dense_retriever_is_cosine_of_the_embeddings(corpus):
    dense = C.DenseRetriever(corpus, embed=fake_embed)
    q = ["toy story comedy", "aliens action"]
    got = dense.scores(q)
    Q, D = fake_embed(q), fake_embed(corpus.texts)
    want = (Q @ D.T) / (np.linalg.norm(Q, axis=1)[:, None] * np.linalg.norm(D, axis=1)[None, :])
    assert np.allclose(got, want, atol=1e-6)
    ids, _ = dense.search(q, k=2)
    assert ids[0, 0] == 2 and ids[1, 0] == 7
    assert dense.scores([""]).shape == (1, len(corpus)), "an empty query is embedded, not an error"


def test_competition_ranks():
    assert C.competition_ranks(np.array([3.0, 5.0, 5.0, 1.0])).tolist() == [[3, 1, 1, 4]]
    assert C.competition_ranks(np.zeros((2, 3))).tolist() == [[1, 1, 1], [1, 1, 1]]


def test_hybrid_rrf_against_hand_computation(corpus):
    lex = np.array([[0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    den = np.array([[0.9, 0.1, 0.8, 0.2, 0.3, 0.4, 0.5, 0.6]])
    h = C.HybridRetriever(Fixed(corpus, lex), Fixed(corpus, den), weight=0.3, k0=60)
    # lexical ranks: item8 1, item2 2, item3 3, the five zeros tie at 4
    r_lex = [4, 2, 3, 4, 4, 4, 4, 1]
    r_den = [1, 8, 2, 7, 6, 5, 4, 3]
    want = [0.3 / (60 + a) + 0.7 / (60 + b) for a, b in zip(r_lex, r_den)]
    assert np.allclose(h.scores(["q"])[0], want)
    ids, scores = h.search(["q"], k=3)
    # item1: .3/64 + .7/61 = .01616, item3: .3/63 + .7/62 = .01605, item8: .3/61 + .7/63 = .01603
    assert ids[0].tolist() == [1, 3, 8] and np.allclose(scores[0], sorted(want, reverse=True)[:3])


def test_hybrid_minmax_and_extreme_weights(corpus):
    lex = np.array([[0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 4.0]])
    den = np.array([[0.9, 0.1, 0.8, 0.2, 0.3, 0.4, 0.5, 0.6]])
    mm = C.HybridRetriever(Fixed(corpus, lex), Fixed(corpus, den), weight=0.25, method="minmax")
    want = 0.25 * lex[0] / 4.0 + 0.75 * (den[0] - 0.1) / 0.8
    assert np.allclose(mm.scores(["q"])[0], want)
    only_dense = C.HybridRetriever(Fixed(corpus, lex), Fixed(corpus, den), weight=0.0)
    assert only_dense.search(["q"], 8)[0][0].tolist() == C.topk(den, corpus.ids, 8)[0][0].tolist()
    with pytest.raises(ValueError):
        C.HybridRetriever(Fixed(corpus, lex), Fixed(corpus, den), weight=1.5)


def test_topk_excludes_and_fills():
    ids = np.array([10, 20, 30])
    top, s = C.topk(np.array([[1.0, 3.0, 2.0], [1.0, 1.0, 1.0]]), ids, 2, exclude=[[20], []])
    assert top.tolist() == [[30, 10], [10, 20]], "ties keep catalog order"
    top, s = C.topk(np.array([[1.0, 3.0, 2.0]]), ids, 5, exclude=[[20, 30]])
    assert top.tolist() == [[10, C.NO_ITEM, C.NO_ITEM, C.NO_ITEM, C.NO_ITEM]] and np.isneginf(s[0, 1:]).all()


# ----------------------------------------------------------------------------- queries with known answers

def synthetic_catalog(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = list(C.GENRE_WORDS)
    rows = []
    for i in range(1, n + 1):
        g = list(rng.choice(labels, size=int(rng.integers(1, 4)), replace=False))
        rows.append({"item": i, "title": f"Film {i}", "year": int(rng.integers(1930, 1999)), "genres": g})
    rows.append({"item": n + 1, "title": "unknown", "year": None, "genres": []})
    items = pd.DataFrame(rows)
    return C.catalog_corpus(items, popularity={i: int(rng.integers(0, 100)) for i in range(1, n + 1)})


def test_every_answer_satisfies_the_constraints_and_every_match_is_an_answer():
    cat = synthetic_catalog()
    queries = C.make_queries(cat, 60, seed=3, like_share=0.5, min_answers=3, max_answers=12)
    assert len(queries) == 60
    by_id = {int(i): (g, y) for i, g, y in zip(cat.ids, cat.genres, cat.years)}
    for q in queries:
        assert len(q.answers) >= 3
        for a in q.answers:
            g, y = by_id[a]
            assert set(q.genres) <= set(g) and q.decade <= y < q.decade + 10
        matching = {i for i, (g, y) in by_id.items() if C.satisfies(g, y, q.genres, q.decade)}
        if q.anchor is None:
            assert set(q.answers) == matching
        else:
            assert q.anchor in matching and q.anchor not in q.answers and q.exclude == [q.anchor]
            assert set(q.answers) == matching - {q.anchor}
            assert cat.title_of(q.anchor) in q.text
        assert q.style in ("literal", "paraphrase") and q.text[0].isupper()
    assert {q.style for q in queries} == {"literal", "paraphrase"}
    assert any(q.anchor is not None for q in queries) and any(q.anchor is None for q in queries)
    assert any(len(q.genres) == 2 for q in queries)


def test_query_generator_is_deterministic_from_its_seed():
    cat = synthetic_catalog()
    a, b = C.make_queries(cat, 20, seed=7), C.make_queries(cat, 20, seed=7)
    assert a == b
    assert [q.text for q in C.make_queries(cat, 20, seed=8)] != [q.text for q in a]


def test_validation_and_test_queries_use_disjoint_constraints():
    cat = synthetic_catalog()
    valid, test = C.query_sets(cat, 30, 40, seed=1)
    assert len(valid) == 30 and len(test) == 40
    assert not {(q.genres, q.decade) for q in valid} & {(q.genres, q.decade) for q in test}
    assert C.query_sets(cat, 30, 40, seed=1) == (valid, test)


def test_literal_and_paraphrased_wording():
    assert C.decade_phrase(1980, "literal") == "from the 1980s"
    assert C.decade_phrase(1980, "literal", short=True) == "from the 80s"
    assert C.decade_phrase(1990, "paraphrase") == "made in the nineties"
    assert C._request(("Comedy",), 1980, "literal", "Ghostbusters", True) == "A comedy from the 80s like Ghostbusters"
    assert C._request(("Sci-Fi", "Thriller"), 1990, "paraphrase", None) == \
        "A science fiction film that is also a suspenseful film made in the nineties"


def test_no_combination_of_the_requested_size_is_a_clear_error(corpus):
    with pytest.raises(ValueError, match="no \\(genres, decade\\)"):
        C.make_queries(corpus, 3, min_answers=50, max_answers=60)


# ----------------------------------------------------------------------------- evaluation

def brute_recall(lst, rel, k):
    rel = set(rel)
    found = set()
    for i in list(lst)[:k]:
        if i in rel:
            found.add(i)
    return len(found) / len(rel) if rel else 0.0


def test_recall_at_k_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lst = rng.integers(-1, 15, size=int(rng.integers(1, 20))).tolist()
        rel = set(rng.integers(1, 15, size=int(rng.integers(0, 6))).tolist())
        k = int(rng.integers(1, 25))
        assert math.isclose(C.recall_at_k(lst, rel, k), brute_recall(lst, rel, k))


def test_per_query_recall_ndcg_and_ceiling():
    qs = [C.Query("q1", frozenset({1, 2}), ("Comedy",), 1990), C.Query("q2", frozenset({5}), ("Drama",), 1990)]
    lists = np.array([[2, 9, 1], [7, 8, 9]])
    assert C.per_query(lists, qs, 2).tolist() == [0.5, 0.0]
    assert C.per_query(lists, qs, 3, "ndcg")[0] == pytest.approx(metrics.ndcg_at_k([2, 9, 1], {1, 2}, 3))
    assert C.per_query(lists, qs, 1, "hit").tolist() == [1.0, 0.0]
    assert C.recall_ceiling([C.Query("q", frozenset(range(1, 21)), ("Drama",), 1990)], 10).tolist() == [0.5]


def test_constraint_hits(corpus):
    q = C.Query("a comedy from the 80s", frozenset({6}), ("Comedy",), 1980)
    # Ghostbusters: comedy, 1984 (both); Toy Story: comedy, 1995 (genre); Aliens: 1986 (decade); -1 ignored
    t = C.constraint_hits([[1, 2, 7, C.NO_ITEM]], [q], corpus, k=4)
    assert t.iloc[0].to_dict() == pytest.approx({"genres": 2 / 3, "decade": 2 / 3, "both": 1 / 3})
    assert C.constraint_hits([[C.NO_ITEM]], [q], corpus).iloc[0].tolist() == [0.0, 0.0, 0.0]


def test_search_queries_never_returns_the_anchor(corpus):
    q = C.Query("like ghostbusters", frozenset({6}), ("Comedy",), 1980, anchor=1)
    ids = C.search_queries(C.BM25Retriever(corpus), [q], 5)
    assert 1 not in ids[0].tolist()


def test_tune_weight_returns_a_grid_weight_and_its_table(corpus):
    lex, den = C.BM25Retriever(corpus), C.DenseRetriever(corpus, embed=fake_embed)
    qs = [C.Query("alien", frozenset({3, 7}), ("Sci-Fi",), 1970), C.Query("crime thriller", frozenset({4, 8}), ("Crime",), 1990)]
    w, table = C.tune_weight(lex, den, qs, k=2, grid=(0.0, 0.5, 1.0))
    assert w in (0.0, 0.5, 1.0) and list(table["weight"]) == [0.0, 0.5, 1.0]
    assert table["recall@2"].max() == pytest.approx(table.set_index("weight").loc[w, "recall@2"])


# ----------------------------------------------------------------------------- the guard and re-ranking

def test_only_retrieved_keeps_retrieved_ids_in_order_once():
    assert C.only_retrieved([5, 99, 3, 5, -1, 7], [3, 5, 7, -1]) == [5, 3, 7]
    assert C.only_retrieved([], [1, 2]) == [] and C.only_retrieved([1, 2], []) == []
    assert C.only_retrieved(np.array([2, 1]), np.array([1, 2])) == [2, 1]
    assert C.only_retrieved(["2", None, "Alien", 3.0, True, np.int64(3)], [2, 3, 1]) == [3], "only integer IDs"


@pytest.fixture(scope="module")
def tiny_lm():
    return make_tiny_lm()


def test_rerank_returns_a_permutation_of_the_retrieved_ids(tiny_lm, corpus):
    retrieved = np.array([[3, 1, 7, 2], [8, 4, C.NO_ITEM, C.NO_ITEM], [C.NO_ITEM] * 4])
    out = C.rerank(tiny_lm, ["a scary movie", "a heist", "nothing"], retrieved, corpus, threads=None)
    assert out.shape == retrieved.shape
    assert sorted(out[0].tolist()) == [1, 2, 3, 7]
    assert sorted(out[1, :2].tolist()) == [4, 8] and out[1, 2:].tolist() == [C.NO_ITEM] * 2
    assert out[2].tolist() == [C.NO_ITEM] * 4
    plain = C.rerank(tiny_lm, ["a scary movie"], retrieved[:1], corpus, text="title", shared_cache=False, threads=None)
    cached = C.rerank(tiny_lm, ["a scary movie"], retrieved[:1], corpus, text="title", shared_cache=True, threads=None)
    assert sorted(plain[0].tolist()) == [1, 2, 3, 7] and plain.tolist() == cached.tolist()


def test_rerank_order_follows_the_candidate_scores(tiny_lm, corpus):
    docs = [corpus.text_of(i) for i in (3, 1, 7)]
    s = C.candidate_scores(tiny_lm, "a scary movie", docs)
    out = C.rerank(tiny_lm, ["a scary movie"], np.array([[3, 1, 7]]), corpus, threads=None)
    assert out[0].tolist() == [[3, 1, 7][j] for j in np.argsort(-s, kind="stable")]


# ----------------------------------------------------------------------------- free generation, audited

@pytest.mark.parametrize("text, title", [
    ('Ghostbusters" (1984) is a classic.', "Ghostbusters"),
    ("The Usual Suspects (1995)", "The Usual Suspects"),
    ('Alien" by Ridley Scott', "Alien"),
    ("Heat - a heist film", "Heat"),
    ("", ""),
])
def test_first_title(text, title):
    assert C.first_title(text) == title


def test_free_generation_grounds_and_audits_without_a_real_model(tiny_lm, corpus, monkeypatch):
    from course_lib.llm import generator as G
    answers = ['Ghostbusters" (1984)', 'Back to the Future"', 'Usual Suspects, The"']
    monkeypatch.setattr(G, "generate", lambda lm, prompts, **kw: answers[: len(prompts)])
    qs = [C.Query("A comedy from the 80s", frozenset({1, 6}), ("Comedy",), 1980),
          C.Query("A comedy from the 80s", frozenset({1, 6}), ("Comedy",), 1980),
          C.Query("A crime movie from the 90s", frozenset({8}), ("Crime",), 1990)]
    got = C.free_generation(tiny_lm, qs, corpus)
    assert [a.item for a in got] == [1, C.NO_ITEM, 4]
    assert [a.fits for a in got] == [True, False, False]
    assert C.out_of_catalog_rate([a.item for a in got], corpus) == pytest.approx(1 / 3)
    assert C.out_of_catalog_rate([1, 2], corpus) == 0.0 and math.isnan(C.out_of_catalog_rate([], corpus))


def test_request_prompt_prefill_and_empty_request(tiny_lm):
    p = C.request_prompt(tiny_lm, "", prefill=C.ANSWER_PREFILL)
    assert p.endswith('<assistant>I recommend "') and "a good movie" in p
