"""course_lib.llm.knowledge: lexicalization of the three sources, the KG and co-occurrence facts on
tiny hand-made inputs, the candidate-ranking cases, the metrics, and one LoRA round on a tiny
random Llama (no real model runs here)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from course_lib.llm import knowledge as K

from llm_fakes import tiny_lm

pytestmark = pytest.mark.unit

ITEMS = pd.DataFrame({
    "item": [1, 2, 3, 4, 5, 6],
    "title": ["Heat", "Casino", "Usual Suspects, The", "unknown", "Fargo", "Toy Story"],
    "year": [1995, 1995, 1995, None, 1996, 1995],
    "genres": [["Action", "Crime", "Thriller"], ["Crime", "Drama"], ["Crime", "Thriller"], [],
               ["Crime", "Drama", "Thriller"], ["Animation", "Comedy"]],
})
TITLES = dict(zip(ITEMS["item"], ITEMS["title"]))

# entities: m.dir shared by Heat and Casino (director), m.act by Heat, Casino, Usual Suspects (actor),
# a sequel from Casino to Fargo; Toy Story (6) is not linked
TRIPLES = pd.DataFrame({
    "head": ["m.h", "m.c", "m.h", "m.c", "m.u", "m.c", "m.f", "m.h", "m.f"],
    "relation": ["film.film.directed_by", "film.film.directed_by", "film.film.actor", "film.film.actor",
                 "film.film.actor", "film.film.sequel", "film.film.country", "film.film.country",
                 "film.film.directed_by"],
    "tail": ["m.dir", "m.dir", "m.act", "m.act", "m.act", "m.f", "m.us", "m.us", "m.other"],
})
LINKS = pd.DataFrame({"item": [1, 2, 3, 5], "entity": ["m.h", "m.c", "m.u", "m.f"]})


# ----------------------------------------------------------------------------- lexicalization

@pytest.mark.parametrize("relation, noun", [("film.film.directed_by", "director"), ("film.film.actor", "actor"),
                                            ("film.film.production_companies", "production company"),
                                            ("film.film.music", "music"), ("book.book.written_by", "written")])
def test_relation_names_are_readable(relation, noun):
    assert K.relation_name(relation) == noun


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_relation_name_rejects_non_relations(bad):
    with pytest.raises(ValueError, match="relation"):
        K.relation_name(bad)


def test_kg_sentence_cleans_titles_and_never_writes_an_id():
    assert K.kg_sentence("Usual Suspects, The", "film.film.actor", "Heat") == \
        "The Usual Suspects and Heat share the same actor."
    assert K.kg_sentence("Heat", "film.film.actor", "Casino", entity="m.0bln8") == "Heat and Casino share the same actor."
    assert K.kg_sentence("Heat", "catalog.genres", "Casino", entity="crime, drama") == \
        "Heat and Casino share the same genres (crime, drama)."
    assert K.kg_sentence("Alien", "film.film.sequel", "Aliens") == "Aliens is the sequel to Alien."
    with pytest.raises(ValueError, match="two different movies"):
        K.kg_sentence("Heat", "film.film.actor", "Heat")


def test_collab_sentence_lists_titles_naturally():
    assert K.collab_sentence("Heat", ["Casino"]) == "People who like Heat also tend to like Casino."
    assert K.collab_sentence("Heat", ["Casino", "Usual Suspects, The", "Fargo"]) == \
        "People who like Heat also tend to like Casino, The Usual Suspects and Fargo."
    with pytest.raises(ValueError, match="at least one"):
        K.collab_sentence("Heat", [])
    with pytest.raises(ValueError, match="itself"):
        K.collab_sentence("Heat", ["Casino", "Heat"])


def test_wrap_uses_the_markers():
    assert K.wrap(["A.", " ", "B."]) == "<knowledge> A. B. </knowledge>"
    with pytest.raises(ValueError):
        K.wrap(["", "  "])


# ----------------------------------------------------------------------------- the knowledge graph

def test_kg_pairs_shared_entities_and_sequels():
    pairs = K.kg_pairs(TRIPLES, LINKS, relations=("film.film.directed_by", "film.film.actor", "film.film.sequel"))
    got = {(a, b, r) for a, b, r in zip(pairs["item_a"], pairs["item_b"], pairs["relation"])}
    assert got == {(1, 2, "film.film.directed_by"), (1, 2, "film.film.actor"), (1, 3, "film.film.actor"),
                   (2, 3, "film.film.actor"), (2, 5, "film.film.sequel")}
    every = K.kg_pairs(TRIPLES, LINKS)                          # None: every relation (country too)
    assert (1, 5) in set(zip(every["item_a"], every["item_b"]))
    with pytest.raises(ValueError, match="columns"):
        K.kg_pairs(TRIPLES.rename(columns={"tail": "t"}), LINKS)


def test_kg_pairs_caps_big_groups_along_a_cycle():
    n = 40
    triples = pd.DataFrame({"head": [f"e{i}" for i in range(n)], "relation": "catalog.genres", "tail": "drama"})
    links = pd.DataFrame({"item": np.arange(1, n + 1), "entity": [f"e{i}" for i in range(n)]})
    pairs = K.kg_pairs(triples, links, max_group=6, seed=1)
    assert len(pairs) == n * 3                                   # max_group // 2 partners each way along the cycle
    degree = pd.concat([pairs["item_a"], pairs["item_b"]]).value_counts()
    assert set(degree.index) == set(range(1, n + 1)) and (degree == 6).all()
    assert (pairs["item_a"] < pairs["item_b"]).all()
    assert K.kg_pairs(triples.head(5), links, max_group=6).shape[0] == 10   # small group: every pair


def test_catalog_kg_is_readable_and_skips_what_it_cannot_describe():
    triples, links = K.catalog_kg(ITEMS)
    assert 4 not in set(links["item"])                          # untitled, no genres: no entity
    assert set(triples["relation"]) == {"catalog.genres", "catalog.genres_and_year"}
    heat = triples[triples["head"] == "item:1"].set_index("relation")["tail"]
    assert heat["catalog.genres"] == "action, crime, thriller"
    assert heat["catalog.genres_and_year"] == "action, crime, thriller; 1995"


def test_cooccurrence_counts_training_likes_only():
    liked = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3, 3], "item": [1, 2, 1, 2, 1, 2, 5]})
    C = K.cooccurrence(liked, n_items=6, min_count=2)
    assert C.shape == (7, 7) and np.allclose(np.diag(C), 0)
    assert math.isclose(C[1, 2], 3 / math.sqrt(3 * 3)) and C[1, 2] == C[2, 1]
    assert C[1, 5] == 0                                          # one user liked both: below min_count
    with pytest.raises(ValueError, match="1..6"):
        K.cooccurrence(pd.DataFrame({"user": [1], "item": [9]}), n_items=6)


@pytest.fixture
def kb():
    liked = pd.DataFrame({"user": [1, 1, 1, 2, 2, 3, 3], "item": [1, 2, 3, 1, 2, 1, 3]})
    pairs = K.kg_pairs(TRIPLES, LINKS, relations=K.INFORMATIVE + (K.SEQUEL,))
    return K.KnowledgeBase(ITEMS, pairs, K.cooccurrence(liked, 6, min_count=1))


def test_knowledge_base_facts_per_source(kb):
    assert kb.text_facts(3) == ["The Usual Suspects (1995); genres: crime, thriller."]
    facts = kb.kg_facts(2)
    assert facts[0] == "Casino and Heat share the same director."          # most telling relation first
    assert "Fargo is the sequel to Casino." in facts
    assert not any("m." in f for f in facts)
    assert kb.kg_facts(5) == ["Fargo is the sequel to Casino."]             # direction kept from either side
    assert kb.collab_facts(1) == ["People who like Heat also tend to like Casino and The Usual Suspects."]
    assert kb.block("collab", 1).startswith("<knowledge> People who like Heat")
    with pytest.raises(ValueError, match="source"):
        kb.facts("reviews", 1)
    with pytest.raises(KeyError, match="99"):
        kb.text_facts(99)


def test_items_the_sources_know_nothing_about_are_skipped_and_counted(kb):
    assert kb.kg_facts(6) == [] and kb.block("kg", 6) is None                # Toy Story has no KG entity
    assert kb.collab_facts(4) == []                                          # the untitled movie: no facts
    lm = tiny_lm()
    pairs, skipped = K.knowledge_examples(lm, kb, "kg", [1, 6, 4])
    assert skipped == 2 and len(pairs) == 1
    prompt, answer = pairs[0]
    assert "What do you know about the movie Heat?" in prompt and answer.startswith(K.BEGIN) and answer.endswith(K.END)
    assert K.knowledge_examples(lm, kb, "none", [1, 2]) == ([], 0)
    cov = kb.coverage([1, 2, 6])
    assert cov["text"] == 1.0 and math.isclose(cov["kg"], 2 / 3)


# ----------------------------------------------------------------------------- the ranking task

def _ratings():
    rows = []
    for u in range(1, 7):
        for t, i in enumerate(range(1, 12)):
            rows.append((u, i + (u % 3), 5.0 if t % 2 == 0 else 2.0, 1000 * u + t))
    rows += [(9, 1, 5.0, 1), (9, 2, 5.0, 2)]                                   # user 9: only two likes
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


def test_split_users_is_a_seeded_partition():
    tr, va, te = K.split_users(np.arange(1, 101), valid_frac=0.2, test_frac=0.1, seed=3)
    assert (len(tr), len(va), len(te)) == (70, 20, 10)
    assert set(tr) | set(va) | set(te) == set(range(1, 101)) and not (set(tr) & set(te) or set(va) & set(te))
    assert all((a == b).all() for a, b in zip(K.split_users(np.arange(1, 101), 0.2, 0.1, seed=3), (tr, va, te)))
    with pytest.raises(ValueError):
        K.split_users([1, 2], 0.6, 0.5)


def test_ranking_cases_hide_the_last_like_among_unrated_negatives():
    r = _ratings()
    pop = K.popularity_of(r, 20)
    cases, skipped = K.ranking_cases(r, [1, 2, 9, 77], pop, n_negatives=4, min_liked=3, max_history=3, seed=0)
    assert skipped == {"too_few_likes": 1, "unknown_user": 1} and [c.user for c in cases] == [1, 2]
    for c in cases:
        g = r[r["user"] == c.user].sort_values("timestamp")
        liked = g.loc[g["rating"] >= 4, "item"].tolist()
        assert c.target == liked[-1] and c.history.tolist() == liked[-4:-1]
        assert len(c.candidates) == 5 and list(c.candidates).count(c.target) == 1
        negatives = set(c.candidates.tolist()) - {c.target}
        assert not negatives & set(g["item"]) and 0 not in negatives
    with pytest.raises(ValueError, match="timestamp"):
        K.ranking_cases(r.drop(columns="timestamp"), [1], pop)


def test_negatives_follow_popularity():
    r = pd.DataFrame({"user": [1] * 3, "item": [1, 2, 3], "rating": [5.0, 5.0, 5.0], "timestamp": [1, 2, 3]})
    pop = np.zeros(201)
    pop[150:160] = 1000.0
    draws = np.concatenate([K.ranking_cases(r, [1], pop, n_negatives=3, min_liked=2, seed=s)[0][0].candidates
                            for s in range(30)])
    share = np.isin(draws[draws != 3], np.arange(150, 160)).mean()
    assert share > 0.8, f"popular items should dominate the negatives, got {share:.2f}"


def test_knowledge_items_prefer_what_is_ranked():
    cases = [K.RankingCase(1, np.array([7]), 3, np.array([3, 4, 5])), K.RankingCase(2, np.array([7]), 4, np.array([4, 6]))]
    assert set(K.knowledge_items(cases, 2).tolist()) == {4, 7}
    assert len(K.knowledge_items(cases, 100)) == 5


def test_metrics_of_ranked_candidates():
    assert K.rank_candidates([0.1, 0.9, 0.9, 0.5], [4, 5, 6, 7]).tolist() == [5, 6, 7, 4]
    pop = np.array([0, 10, 20, 30, 40, 50, 60, 70], dtype=float)
    assert K.avgpop_at_k([1, 2, -1, 0, 7], pop, 3) == 15.0
    assert math.isnan(K.avgpop_at_k([-1, -1], pop, 2))
    with pytest.raises(ValueError):
        K.avgpop_at_k([1], pop, 0)
    cases = [K.RankingCase(1, np.array([1]), 2, np.arange(2, 8)), K.RankingCase(2, np.array([1]), 7, np.arange(2, 8))]
    table = K.evaluate_rankings([[2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7]], cases, pop, k=5)
    assert table["P@5"].tolist() == [0.2, 0.0] and table["R@5"].tolist() == [1.0, 0.0]
    assert table["NDCG@5"].tolist() == [1.0, 0.0] and table["AvgPop@5"].tolist() == [40.0, 40.0]


# ----------------------------------------------------------------------------- the LLM side

def test_popularity_and_fold_in_rankers_on_the_cases():
    from course_lib.models.popularity import Popularity

    class _Split:
        n_items = 7
        def item_popularity(self):
            return np.array([0, 1, 9, 3, 8, 2, 7, 4])
    model = Popularity().fit(_Split())
    case = K.RankingCase(1, np.array([1]), 2, np.array([3, 2, 5, 6]))
    assert K.score_cases(model, [case])[0].tolist() == [2, 6, 3, 5]


def test_llm_ranker_over_fixed_candidates_returns_permutations():
    from course_lib.llm.generator import LLMRanker
    lm = tiny_lm()
    titles = K.title_list(ITEMS)
    cases = [K.RankingCase(1, np.array([1, 2]), 5, np.array([3, 5, 6])),
             K.RankingCase(2, np.array([3]), 2, np.array([2, 1, 6]))]
    ranker = LLMRanker(lm, titles, K.FixedCandidates({c.user: c.candidates for c in cases}, 6), n_candidates=3)
    ranked = K.llm_rankings(ranker, cases)
    assert [sorted(r.tolist()) for r in ranked] == [[3, 5, 6], [1, 2, 6]]
    with pytest.raises(KeyError, match="no candidate list"):
        K.FixedCandidates({}, 6).score(np.array([1]), [np.array([1])])


def test_run_source_uses_the_adapters_and_restores_the_model(kb):
    pytest.importorskip("peft")
    from course_lib.llm.generator import title_loglik
    from course_lib.llm.scoring import sequence_logprob
    from course_lib.llm.tuning import LoraSettings, add_lora, remove_lora
    lm = tiny_lm(seed=1)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    # the tuned view scores with the adapters: cached-prefix likelihood == plain likelihood, adapters active
    peft = add_lora(lm.model, LoraSettings(r=2, alpha=4))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft.eval()
    view = K.tuned_view(lm, peft)
    cached = title_loglik(view, "<user>hi\n<assistant>", ["Heat", "Casino"])
    plain = sequence_logprob(view, ["<user>hi\n<assistant>"] * 2, ["Heat", "Casino"], mean=True, batch_size=1)
    base_only = sequence_logprob(lm.__class__(remove_lora(peft), lm.tokenizer, lm.device, "b"),
                                 ["<user>hi\n<assistant>"] * 2, ["Heat", "Casino"], mean=True, batch_size=1)
    assert np.allclose(cached, plain, atol=1e-4) and not np.allclose(plain, base_only, atol=1e-4)

    cases = [K.RankingCase(1, np.array([1, 2]), 5, np.array([3, 5, 6]))]
    rec = K.rec_examples(lm, cases, TITLES)
    assert rec[0][1] == "Fargo" and "Recommend one movie" in rec[0][0]
    know, skipped = K.knowledge_examples(lm, kb, "kg", [1, 2, 6])
    run = K.run_source(lm, "kg", rec, know, K.title_list(ITEMS), cases,
                       LoraSettings(r=2, alpha=4, epochs=1, micro_batch=2, accumulation=1, lr=1e-2),
                       skipped_items=skipped, heldout_pairs=know[:1])
    assert run.n_rec == 1 and run.n_knowledge == 2 and run.skipped_items == 1 and run.tune.steps == 2
    assert sorted(run.rankings[0].tolist()) == [3, 5, 6]
    assert run.taught_before.shape == run.taught_after.shape == (2,) and not np.allclose(run.taught_before, run.taught_after)
    assert not hasattr(lm.model, "peft_config")
    after = lm.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="source"):
        K.run_source(lm, "reviews", rec, know, K.title_list(ITEMS), cases)
