"""course_lib.llm.generator on small inputs: prompts, list parsing, grounding, the title trie,
position bias and its aggregation fix, the LLM recommenders' contract. No real model generates
text here: a character tokenizer and a tiny randomly initialised Llama stand in for one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib.llm import generator as G
from course_lib.llm import scoring as S
from course_lib.models.base import NO_ITEM, Recommender

from llm_fakes import CharTok, tiny_lm as make_tiny_lm

pytestmark = pytest.mark.unit


# ----------------------------------------------------------------------------- tiny stand-ins

@pytest.fixture(scope="module")
def tiny_lm():
    return make_tiny_lm()


CATALOG = {1: "Usual Suspects, The", 2: "Toy Story", 3: "Toy Soldiers", 4: "Seven (Se7en)", 5: "Chasing Amy",
           6: "Chasing Amy", 7: "Shawshank Redemption, The", 8: "Batman", 9: "Batman Returns", 10: "Fargo"}


@pytest.fixture(scope="module")
def index():
    return G.TitleIndex.from_titles(list(CATALOG), list(CATALOG.values()))


# ----------------------------------------------------------------------------- prompts

def test_topk_prompt_cleans_keeps_recent_and_asks_for_k():
    p = G.topk_prompt(["Toy Story", "Usual Suspects, The", "Fargo"], k=3, max_items=2)
    assert p == ("I have watched these movies, oldest first:\n1. The Usual Suspects\n2. Fargo\n\n"
                 "Recommend 3 other movies I would like. Answer with a numbered list of 3 movie titles, "
                 "one per line, and nothing else.")
    with pytest.raises(ValueError, match="empty"):
        G.topk_prompt([], 3)
    with pytest.raises(ValueError, match="k must"):
        G.topk_prompt(["Fargo"], 0)


def test_tasks_and_profile():
    assert "rate the movie The Usual Suspects from 1 to 5" in G.task_request("rating", candidate="Usual Suspects, The")
    assert "why I might like the movie Fargo" in G.task_request("explain", candidate="Fargo")
    with pytest.raises(ValueError, match="candidate"):
        G.task_request("rating")
    with pytest.raises(ValueError, match="task must"):
        G.task_request("poem")
    msg = G.user_message(G.describe_profile("A 24-year-old man."), "explain", candidate="Fargo")
    assert msg.startswith("About me: A 24-year-old man.\n\n")
    with pytest.raises(ValueError):
        G.describe_profile("  ")


def test_describe_ratings_and_expected_rating():
    t = G.describe_ratings(["Toy Story", "Net, The", "Fargo"], [4, 2.5, 5], max_items=2)
    assert t == "My ratings (1-5), oldest first:\n1. The Net: 2.5\n2. Fargo: 5"
    with pytest.raises(ValueError):
        G.describe_ratings(["a"], [1, 2])
    np.testing.assert_allclose(G.expected_rating([[0, 0, 0, 0, 1], [0.5, 0, 0, 0, 0.5], [2, 0, 0, 0, 2]]), [5, 3, 3])


def test_few_shot_messages_put_shots_before_the_question_and_never_the_future():
    shots = G.make_shots([["a", "b", "c", "d"], ["e", "f", "g"]], k=2)
    assert shots[0][1] == "1. c\n2. d" and "1. a\n2. b" in shots[0][0] and "c" not in shots[0][0].split("\n")[1:3]
    msgs = G.messages("question?", shots)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[-1]["content"] == "question?" and G.messages("q") == [{"role": "user", "content": "q"}]
    with pytest.raises(ValueError, match="more than k"):
        G.make_shots([["a", "b"]], k=2)


# ----------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, titles", [
    ("1. Toy Story\n2. Fargo\n3) Batman", ["Toy Story", "Fargo", "Batman"]),
    ("Here you go:\n1. Toy Story (1995)\n2. **Fargo** - a dark comedy\n\nEnjoy!", ["Toy Story (1995)", "Fargo"]),
    ("1. 1. Cop Land\n2. 2. Mother", ["Cop Land", "Mother"]),
    ("- \"Toy Story\"\n* Fargo.\n• Se7en", ["Toy Story", "Fargo", "Se7en"]),
    ("Toy Story; Fargo; Batman", ["Toy Story", "Fargo", "Batman"]),
    ("Toy Story, Fargo, Batman", ["Toy Story", "Fargo", "Batman"]),
    ("Star Wars: Episode IV - A New Hope", ["Star Wars: Episode IV"]),
    ("", []), ("   \n\n", []),
])
def test_parse_list(text, titles):
    assert G.parse_list(text) == titles


def test_parse_list_cap():
    assert G.parse_list("1. a\n2. b\n3. c", max_items=2) == ["a", "b"]


# ----------------------------------------------------------------------------- grounding

@pytest.mark.parametrize("raw, key", [("Usual Suspects, The (1995)", "the usual suspects"),
                                      ("The Usual Suspects", "the usual suspects"),
                                      ("Chasing Amy (1997) [item 268]", "chasing amy"),
                                      ("Romeo & Juliet!", "romeo and juliet"), ("", ""), ("unknown", ""),
                                      (None, "")])
def test_normalize_title(raw, key):
    assert G.normalize_title(raw) == key


def test_grounding_article_order_near_miss_alias_duplicates(index):
    m = G.ground(["The Usual Suspects", "The Shawshank Redemtion", "Seven", "Chasing Amy", "Toy Story 2",
                  "A Movie That Does Not Exist", ""], index)
    assert [x.item for x in m][:4] == [1, 7, 4, 5], m           # duplicate title: the first ID
    assert m[0].score == 100 and G.THRESHOLD <= m[1].score < 100
    assert m[4].score == 90 and m[4].key == "toy story"         # a sequel is not the film itself
    assert m[4].item == NO_ITEM and m[5].item == NO_ITEM and m[6].item == NO_ITEM
    # the threshold decides near misses
    assert G.ground_ids(["The Shawshank Redemtion"], index, threshold=100)[0] == NO_ITEM
    assert G.ground_ids(["Toy Story 2"], index, threshold=80)[0] == 2
    assert G.ground_ids([], index).shape == (0,)


def test_grounding_matches_a_brute_force_argmax(index):
    from rapidfuzz import fuzz
    rng = np.random.default_rng(0)
    words = ["toy", "story", "the", "batman", "returns", "fargo", "amy", "chasing", "seven", "x"]
    for _ in range(50):
        q = " ".join(rng.choice(words, size=int(rng.integers(1, 4))))
        scores = [fuzz.ratio(G.normalize_title(q), k) for k in index.keys]
        best = int(np.argmax(scores))
        want = int(index.items[best]) if scores[best] >= 85 else NO_ITEM
        assert G.ground_ids([q], index, threshold=85)[0] == want, q


def test_grounding_stats_count_each_title_once():
    s = G.grounding_stats([5, NO_ITEM, 1, 5, 9, 1, 7], history=[1, 2])
    assert s == {"n": 7, "valid": 6, "hallucinated": 1, "repeat": 2, "duplicate": 1, "new": 3}
    assert s["hallucinated"] + s["repeat"] + s["duplicate"] + s["new"] == s["n"]
    assert G.grounding_stats([], [1])["n"] == 0
    r = G.grounding_rates([s, G.grounding_stats([], [1]), G.grounding_stats([3], [])])
    assert r["titles"] == 8 and r["valid"] == pytest.approx(7 / 8) and r["new"] == pytest.approx(4 / 8)
    assert r["empty"] == pytest.approx(1 / 3)


def test_served_list_drops_invalid_seen_and_duplicates():
    out = G.served_list([5, NO_ITEM, 1, 5, 9, 7], history=[1, 2], k=4)
    assert out.tolist() == [5, 9, 7, NO_ITEM]
    assert G.served_list([3, 4, 5, 6], [], k=2).tolist() == [3, 4]


# ----------------------------------------------------------------------------- the trie

def _walk(trie, sep, eos, k, banned, numbers, rng, max_steps=400):
    """A random decoder that only ever takes allowed tokens (what generate does with the hook)."""
    fn = G.constrained_fn(trie, sep, eos, k, [banned], numbers)(prompt_width=2)
    ids = [7, 7]
    for _ in range(max_steps):
        allowed = fn(0, torch.tensor(ids))
        assert allowed, "the hook must always allow at least one token"
        ids.append(int(rng.choice(allowed)))
        if ids[-1] == eos:
            break
    return ids[2:]


def test_every_trie_path_spells_a_catalog_title():
    tok = CharTok()
    trie, sep = G.catalog_trie(tok, list(CATALOG), list(CATALOG.values()))
    spelled = {}
    for path, items in trie.paths():
        assert path[-1] == sep
        text = tok.decode(path)
        for i in items:
            assert text == " " + G.clean_title(CATALOG[i]) + "\n"
        spelled[text] = items
    assert len(spelled) == len(set(CATALOG.values()))            # Chasing Amy twice: one path, two items
    assert spelled[" Chasing Amy\n"] == {5, 6}
    # "Batman" is a prefix of "Batman Returns": both end where they should
    node = trie.node(tok.encode(" Batman"))
    assert set(trie.allowed(tok.encode(" Batman"))) == {sep, tok.encode(" ")[0]} and node["items"] == {8, 9}
    assert trie.allowed(tok.encode(" Batman"), banned={8}) == [tok.encode(" ")[0]]
    assert trie.allowed(tok.encode(" Nope")) == []


def test_constrained_lists_are_numbered_catalog_titles_without_banned_items_or_duplicates():
    tok = CharTok()
    trie, sep = G.catalog_trie(tok, list(CATALOG), list(CATALOG.values()))
    index = G.TitleIndex.from_titles(list(CATALOG), list(CATALOG.values()))
    numbers = G.numbering(tok, 4)
    rng = np.random.default_rng(1)
    for _ in range(30):
        ids = _walk(trie, sep, tok.eos_token_id, 4, {1, 2}, numbers, rng)
        assert ids[-1] == tok.eos_token_id
        text = tok.decode(ids[:-1])
        lines = text.splitlines()
        assert len(lines) == 4 and [ln.split(".")[0] for ln in lines] == ["1", "2", "3", "4"], text
        titles = G.parse_list(text)
        got = G.ground(titles, index, threshold=100)
        assert all(m.score == 100 for m in got), text              # 0% invalid by construction
        items = [m.item for m in got]
        assert not {1, 2} & set(items), text                      # the history is banned
        assert len({CATALOG[i] for i in items}) == 4, text         # no duplicates
    # when every title is banned, the hook ends the answer instead of failing
    fn = G.constrained_fn(trie, sep, tok.eos_token_id, 3, [set(CATALOG)], numbers)(0)
    assert fn(0, torch.tensor(numbers[0])) == [tok.eos_token_id]


def test_constrained_decoding_through_generate_with_a_tiny_model(tiny_lm):
    tok = tiny_lm.tokenizer
    trie, sep = G.catalog_trie(tok, list(CATALOG), list(CATALOG.values()))
    index = G.TitleIndex.from_titles(list(CATALOG), list(CATALOG.values()))
    factory = G.constrained_fn(trie, sep, tok.eos_token_id, 2, [set(), {10}], G.numbering(tok, 2))
    texts = G.generate(tiny_lm, ["<user>hello\n<assistant>", "<user>hi\n<assistant>"], max_new_tokens=60,
                       prefix_allowed_tokens_fn_factory=factory, stop_at_blank_line=False)
    for text in texts:
        titles = G.parse_list(text)
        assert 1 <= len(titles) <= 2
        assert all(m.score == 100 for m in G.ground(titles, index, threshold=100)), text


# ----------------------------------------------------------------------------- the ranker

def test_title_loglik_equals_sequence_logprob(tiny_lm):
    prompt = "<user>I liked Fargo\n<assistant>"
    titles = ["Toy Story", "Se7en", "Usual Suspects, The", "A"]
    fast = G.title_loglik(tiny_lm, prompt, titles, batch_size=3)
    slow = S.sequence_logprob(tiny_lm, [prompt] * 4, [G.clean_title(t) for t in titles], mean=True)
    np.testing.assert_allclose(fast, slow, atol=1e-4)


def test_next_token_logits_equal_last_token_logits(tiny_lm):
    prompts = ["<user>a\n<assistant>", "<user>a much longer prompt\n<assistant>", "x"]
    np.testing.assert_allclose(G.next_token_logits(tiny_lm, prompts, batch_size=2).numpy(),
                               S.last_token_logits(tiny_lm, prompts, batch_size=2).numpy(), atol=1e-5)
    assert G.rating_probs(tiny_lm, prompts).shape == (3, 5)


def test_rotations_put_every_candidate_in_every_slot_once():
    r = G.rotations(5)
    assert r.shape == (5, 5)
    for j in range(5):
        assert sorted(np.argwhere(r == j)[:, 1].tolist()) == list(range(5))
    assert all(sorted(row) == list(range(5)) for row in G.random_orders(5, 3, np.random.default_rng(0)))


def test_aggregation_cancels_a_pure_slot_bias():
    value = np.array([0.1, 0.5, 0.2, 0.9])          # what the candidates are worth
    bias = np.array([3.0, 1.0, 0.0, -1.0])          # what the slots add, whatever they hold
    orders = G.rotations(4)
    slot_scores = bias[None, :] + value[orders]     # slot s shows candidate orders[r, s]
    per_cand = G.to_candidate_order(slot_scores, orders)
    np.testing.assert_allclose(per_cand[0], bias[np.argsort(orders[0])] + value)
    agg = G.aggregate(per_cand)
    assert list(np.argsort(-agg)) == list(np.argsort(-value))
    # one order alone follows the bias
    assert int(np.argmax(slot_scores[0])) == 0


def test_hit_rate_and_pick_rate_by_slot():
    t = [0, 0, 1, 1, 2, 2, 0]
    c = [0, 0, 0, 1, 0, 0, 1]
    h = G.hit_rate_by_slot(t, c, 4)
    np.testing.assert_allclose(h[:3], [2 / 3, 1 / 2, 0.0])
    assert np.isnan(h[3])
    np.testing.assert_allclose(G.pick_rate_by_slot(c, 3), [5 / 7, 2 / 7, 0])
    with pytest.raises(ValueError):
        G.hit_rate_by_slot([0, 1], [0], 2)


def test_candidate_prompt():
    p = G.candidate_prompt("About me: x", ["Toy Story", "Usual Suspects, The"])
    assert "A. Toy Story\nB. The Usual Suspects\nAnswer with the letter only." in p
    with pytest.raises(ValueError):
        G.candidate_prompt("x", ["one"])


class _Fixed(Recommender):
    name = "fixed"

    def __init__(self, n):
        self.n_items = n

    def score(self, users, histories):
        return np.tile(np.arange(self.n_items + 1, dtype=np.float32), (len(users), 1))


@pytest.mark.parametrize("method, orders", [("likelihood", 1), ("letter", 1), ("letter", 3)])
def test_llm_ranker_scores_only_the_candidates(tiny_lm, method, orders):
    titles = ["(pad)"] + list(CATALOG.values())
    ranker = G.LLMRanker(tiny_lm, titles, _Fixed(len(CATALOG)), n_candidates=3, method=method, orders=orders)
    hist = [np.array([1, 2]), np.array([10])]
    s = ranker.fit(None).score(np.array([1, 2]), hist)
    assert s.shape == (2, len(CATALOG) + 1)
    assert set(np.flatnonzero(np.isfinite(s[0]))) == {8, 9, 10}     # the retriever's top 3 unseen
    assert set(np.flatnonzero(np.isfinite(s[1]))) == {7, 8, 9}
    top = ranker.recommend(np.array([1, 2]), hist, k=5)
    assert set(top[0][top[0] > 0]) == {8, 9, 10}


def test_llm_generator_serves_its_grounded_list(tiny_lm, monkeypatch):
    titles = ["(pad)"] + list(CATALOG.values())
    gen = G.LLMGenerator(tiny_lm, titles, k=3)
    answers = iter(["1. Fargo\n2. The Usual Suspects\n3. Fargo\n4. Nothing Real", ""])
    monkeypatch.setattr(G, "generate", lambda lm, prompts, *a, **k: [next(answers) for _ in prompts])
    s = gen.score(np.array([1, 2]), [np.array([1]), np.array([2])])
    assert s[0, 10] == 3 and np.isfinite(s[0]).sum() == 1          # seen, duplicate, hallucinated dropped
    assert np.isneginf(s[1]).all()
    st = gen.outputs_[1]["stats"]
    assert (st["new"], st["repeat"], st["duplicate"], st["hallucinated"]) == (1, 1, 1, 1)
    assert gen.outputs_[2]["stats"]["n"] == 0
    lists = G.evaluate_lists([gen.outputs_[1]["served"], gen.outputs_[2]["served"]], [10, 5], k=3)
    np.testing.assert_allclose(lists["HR@3"], [1, 0])
    np.testing.assert_allclose(lists["NDCG@3"], [1, 0])
    con = G.LLMGenerator(tiny_lm, titles, k=3, constrained=True)
    monkeypatch.setattr(G, "generate", lambda lm, prompts, *a, **k: ["1. Fargo\n2. Toy St"])
    con.score(np.array([1]), [np.array([1])])
    assert con.outputs_[1]["titles"] == ["Fargo"]                     # the unfinished title is dropped


def test_constrained_generator_bans_a_watched_film_under_both_its_ids(tiny_lm):
    titles = ["(pad)"] + list(CATALOG.values())                      # Chasing Amy is item 5 and item 6
    con = G.LLMGenerator(tiny_lm, titles, k=3, constrained=True, max_new_tokens=80)
    con.generate_lists(np.array([1, 2]), [np.array([6]), np.array([1])])
    for u, seen in [(1, {5, 6}), (2, {1})]:
        out = con.outputs_[u]
        assert all(m.score == 100 for m in G.ground(out["titles"], con.index, 100)), out["text"]
        assert out["stats"]["repeat"] == 0 and out["stats"]["duplicate"] == 0, out
        assert not seen & set(out["ids"].tolist()), out
