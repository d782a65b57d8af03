"""course_lib.llm.dialogue: understanding a message, the dialogue state, the policy, the tools'
guarantees (no item twice, nothing outside the tools' candidates), bad input, the title-leak
detector, the simulators and the dialogue loop. No real model runs here: a tiny catalog, a
fixed-score retriever and a tiny random Llama stand in."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from course_lib import prep
from course_lib.llm import conductor as C
from course_lib.llm import dialogue as D

from llm_fakes import tiny_lm

pytestmark = pytest.mark.unit

ITEMS = pd.DataFrame({
    "item": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
    "title": ["Star Wars", "Toy Story", "Alien", "Usual Suspects, The", "Casablanca", "Airplane!", "Aliens", "Heat",
              "Funny Face", "Ghost", "Raising Arizona", "Heathers"],
    "year": [1977, 1995, 1979, 1995, 1942, 1980, 1986, 1995, 1957, 1990, 1987, 1989],
    "genres": [["Action", "Sci-Fi", "War"], ["Animation", "Children's", "Comedy"], ["Horror", "Sci-Fi"],
               ["Crime", "Thriller"], ["Drama", "Romance", "War"], ["Comedy"], ["Action", "Sci-Fi"],
               ["Action", "Crime", "Thriller"], ["Comedy", "Musical"], ["Comedy", "Romance", "Thriller"],
               ["Comedy"], ["Comedy"]],
})
POP = {1: 90, 2: 80, 3: 40, 4: 60, 5: 30, 6: 20, 7: 35, 8: 50, 9: 5, 10: 45, 11: 25, 12: 15}


class Fixed(C.Retriever):
    """A retriever that prefers small item IDs (whatever the query): a deterministic stand-in."""
    name = "fixed"

    def __init__(self, corpus):
        self.corpus = corpus
        self.calls = []

    def scores(self, queries):
        self.calls += list(queries)
        return np.tile(-self.corpus.ids.astype(float), (len(queries), 1))


@pytest.fixture(scope="module")
def corpus():
    return C.catalog_corpus(ITEMS, POP)


@pytest.fixture()
def tools(corpus):
    return D.Tools(corpus, Fixed(corpus))


# ----------------------------------------------------------------------------- understanding a message

def test_every_genre_phrase_of_the_request_generator_is_understood():
    for genre, (literal, paraphrase) in C.GENRE_WORDS.items():
        for phrase in (literal, paraphrase):
            wanted, banned = D.parse_genres(f"I would like {phrase}.")
            assert wanted == [genre], (phrase, wanted)
            assert banned == []


def test_negated_genres_are_banned():
    assert D.parse_genres("a comedy, not a horror movie") == (["Comedy"], ["Horror"])
    assert D.parse_genres("nothing scary please") == ([], ["Horror"])
    assert D.parse_genres("I don't want a war film") == ([], ["War"])
    assert D.parse_genres("no") == ([], [])


@pytest.mark.parametrize("text, decade", [("from the 80s", 1980), ("a 1970s film", 1970), ("made in the fifties", 1950),
                                          ("something from 1994", 1990), ("the 80's", 1980), ("anything", None),
                                          ("from the 70s, no, the 90s", 1990)])
def test_decades(text, decade):
    assert D.parse_decade(text) == decade


def test_every_decade_phrase_round_trips():
    for d in range(1920, 2000, 10):
        for style in ("literal", "paraphrase"):
            for short in (False, True):
                assert D.parse_decade(C.decade_phrase(d, style, short)) == d


def test_titles_are_grounded_and_their_words_are_not_genres(tools):
    s = D.parse_slots("I liked Star Wars and Toy Story", tools.index)
    assert s["liked"] == [1, 2] and s["genres"] == [] and s["banned"] == []
    s = D.parse_slots("something like the usual suspects but from the 70s", tools.index)
    assert s["liked"] == [4] and s["decade"] == 1970
    s = D.parse_slots("I hated Alien. A comedy please", tools.index)
    assert s["disliked"] == [3] and s["liked"] == [] and s["genres"] == ["Comedy"]
    assert D.parse_slots('maybe "Heat"?', tools.index)["liked"] == [8]
    assert D.parse_slots("I liked The Usual Suspect", tools.index)["liked"] == [4], "a typo still grounds"
    assert D.parse_slots("I liked Jurassic Park", tools.index)["liked"] == [], "not in the catalog: dropped"
    assert D.parse_slots("I would like a funny movie", tools.index)["liked"] == [], "'like' before a genre is no title"


def test_ordinals():
    assert D.parse_ordinal("why the second one?") == 2
    assert D.parse_ordinal("I'll take number 3") == 3
    assert D.parse_ordinal("the last one") == -1
    assert D.parse_ordinal("why?") is None


@pytest.mark.parametrize("text, shown, intent", [
    ("", False, "unclear"), ("   ", True, "unclear"), ("Bonjour, je voudrais un film", False, "unclear"),
    ("Хочу посмотреть фильм", False, "unclear"), ("asdf qwerty zxcv", False, "unclear"),
    ("Can you recommend a movie?", False, "request"), ("hello", False, "chitchat"),
    ("a comedy from the 80s", False, "constraint"), ("no horror please", True, "constraint"),
    ("I liked Alien", False, "like"), ("I hated Alien", False, "dislike"),
    ("No, none of those.", True, "dislike"), ("no, something else", True, "dislike"),
    ("why the first one?", True, "ask_why"), ("Yes, the second one!", True, "accept"),
    ("yes", False, "chitchat"), ("Yes, but from the 90s", True, "constraint"),
])
def test_intents(tools, text, shown, intent):
    slots = D.parse_slots(text, tools.index, vocab=tools.vocab)
    assert D.classify_intent(text, slots, has_shown=shown) == intent, (text, slots)


def test_noise_keywords_are_dropped_with_a_vocabulary(tools):
    assert D.parse_slots("asdf qwerty", tools.index, vocab=tools.vocab)["keywords"] == []
    assert D.parse_slots("something with a ghost", tools.index, vocab=tools.vocab)["keywords"] == ["ghost"]


@pytest.mark.parametrize("text", [None, "", "🙂🙂", "1234", "?" * 500, "like like like", '"', "I liked", "no " * 50,
                                  "ÄÖÜ äöü", "\n\n", "from the 2010s"])
def test_no_input_breaks_the_understanding(tools, text):
    slots = D.parse_slots(text, tools.index, vocab=tools.vocab)
    assert set(slots) == set(D.empty_slots())
    assert D.classify_intent(text, slots, has_shown=True) in D.INTENTS


# ----------------------------------------------------------------------------- the state

def test_update_state_is_pure_and_follows_its_rules():
    s0 = D.DialogueState(genres=["Horror"], banned=["Comedy"], liked=[3], last_shown=[7, 8, 9], shown=[7, 8, 9])
    slots = {**D.empty_slots(), "genres": ["Comedy"], "banned": ["Horror"], "decade": 1980, "liked": [5],
             "disliked": [3], "keywords": ["space"]}
    s1 = D.update_state(s0, "constraint", slots)
    assert s0.genres == ["Horror"] and s0.turn == 0 and s0.liked == [3], "the input state is unchanged"
    assert s1.genres == ["Comedy"] and s1.banned == ["Horror"] and s1.decade == 1980
    assert s1.liked == [5] and s1.disliked == [3] and s1.keywords == ["space"] and s1.turn == 1
    assert s1.rejected == [] and s1.last_intent == "constraint"
    s2 = D.update_state(s1, "dislike", {**D.empty_slots(), "reject": True})
    assert s2.rejected == [7, 8, 9], "a plain 'no' rejects the whole last list"
    s3 = D.update_state(s1, "dislike", {**D.empty_slots(), "ordinal": 2})
    assert s3.rejected == [8], "'not the second one' rejects one item"
    assert D.update_state(s1, "accept", {**D.empty_slots(), "ordinal": 3}).accepted == 9
    assert D.update_state(s1, "accept", D.empty_slots()).accepted == 7
    assert D.update_state(s1, "accept", {**D.empty_slots(), "ordinal": -1}).accepted == 9
    assert D.update_state(s1, "accept", {**D.empty_slots(), "ordinal": 9}).accepted == 7, "out of range: the first"
    u = D.update_state(D.update_state(s1, "unclear", D.empty_slots()), "unclear", D.empty_slots())
    assert u.unclear_turns == 2 and D.update_state(u, "request", D.empty_slots()).unclear_turns == 0
    with pytest.raises(ValueError, match="unknown intent"):
        D.update_state(s0, "shout", D.empty_slots())


def test_keywords_are_capped_and_unique():
    s = D.DialogueState()
    for w in "a b c d e f g h i j e".split():
        s = D.update_state(s, "constraint", {**D.empty_slots(), "keywords": [w]})
    assert s.keywords == list("cdefghij"), "the last 8, each once"


# ----------------------------------------------------------------------------- the policy

def test_choose_action_rules_in_order():
    S = D.DialogueState
    assert D.choose_action(S(accepted=3, last_intent="ask_why", last_shown=[3])) == "close"
    assert D.choose_action(S(last_intent="ask_why", last_shown=[3], unclear_turns=2)) == "explain"
    assert D.choose_action(S(last_intent="ask_why")) == "ask", "nothing shown: nothing to explain"
    assert D.choose_action(S(unclear_turns=2)) == "fallback"
    assert D.choose_action(S()) == "ask"
    assert D.choose_action(S(genres=["Comedy"])) == "ask", "the decade is missing"
    assert D.choose_action(S(genres=["Comedy"], decade=1980)) == "recommend"
    assert D.choose_action(S(keywords=["space"], asked=["genre", "decade"])) == "recommend", "budget spent"
    assert D.choose_action(S(), ask_budget=0) == "recommend", "recommend at once never asks"
    assert D.choose_action(S(genres=["Comedy"], asked=["decade"]), ask_budget=1) == "recommend"


def test_next_question_order():
    S = D.DialogueState
    assert D.next_question(S()) == "genre"
    assert D.next_question(S(genres=["Comedy"])) == "decade"
    assert D.next_question(S(asked=["genre"])) == "decade", "a question is not repeated while another is open"
    assert D.next_question(S(genres=["Comedy"], decade=1980)) == "liked"


# ----------------------------------------------------------------------------- tools

def test_recommendations_meet_the_constraints_and_never_repeat(tools, corpus):
    s = D.DialogueState(genres=["Comedy"], decade=1980)
    ids, note = D.recommend_items(s, tools, k=3)
    assert set(ids) == {6, 11, 12} and note == "", "every comedy of the 1980s, nothing else"
    s = D.record_shown(s, ids)
    ids2, note2 = D.recommend_items(s, tools, k=3)
    assert not set(ids2) & set(ids), "never shown twice"
    assert note2 and all("Comedy" in corpus.genres[corpus.position[i]] for i in ids2), "the decade was relaxed first"
    s = D.DialogueState(genres=["Comedy"], banned=["Romance", "Musical"], rejected=[2], liked=[6])
    ids3, _ = D.recommend_items(s, tools, k=10)
    assert ids3 and not {2, 6, 9, 10} & set(ids3), "banned genres, rejected and liked items never come back"


def test_the_output_passes_the_guard_and_is_ranked_by_the_tools(tools, corpus):
    s = D.DialogueState(genres=["Action"])
    ids, _ = D.recommend_items(s, tools, k=3)
    assert ids == [1, 8, 7], "popularity and the fixed retriever agree on Star Wars first"
    assert tools.retriever.calls[-1] == D.state_query(s, corpus) == "an action movie"
    popular, _ = D.recommend_items(D.DialogueState(), tools, k=3, popular_only=True)
    assert popular == [1, 2, 4]
    none, note = D.recommend_items(D.DialogueState(shown=list(corpus.ids)), tools, k=3)
    assert none == [] and note == "nothing left to show"


def test_similar_tool_and_fold_in(corpus):
    class FakeModel:
        def score(self, users, histories):
            out = np.zeros((len(users), 13))
            out[:, 1:] = np.arange(12)[::-1]
            for r, h in enumerate(histories):
                out[r, h] = 100.0
            return out
    inter = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3], "item": [1, 2, 2, 3, 3, 4], "timestamp": range(6)})
    split = prep.temporal_split(inter, 0.2, 0.2)
    sim = D.fold_in_scorer(FakeModel(), split, corpus)
    s = sim([3, 99])
    assert s.shape == (len(corpus),)
    assert np.isinf(s[corpus.position[12]]) and s[corpus.position[3]] == 100.0, "unknown items -inf, history scored"
    assert np.allclose(sim([99]), 0), "no known liked film: no opinion"
    prior = D.catalog_scores(FakeModel(), split, corpus, [1, 2], [np.array([1]), np.array([2])])
    assert prior.shape == (2, len(corpus)) and np.isinf(prior[:, corpus.position[12]]).all()


def test_tools_check_their_inputs(corpus):
    with pytest.raises(ValueError, match="one value per catalog item"):
        D.Tools(corpus, popularity=np.ones(3))
    with pytest.raises(ValueError, match="unknown weights"):
        D.Tools(corpus, weights={"magic": 1.0})
    with pytest.raises(ValueError, match="k must be"):
        D.Conductor(D.Tools(corpus), k=0)


# ----------------------------------------------------------------------------- the conductor and bad input

def test_a_conversation(tools):
    conv = D.Conductor(tools, ask_budget=2, k=3)
    r = conv.respond("Hi, can you recommend a movie?")
    assert r.action == "ask" and r.slot == "genre" and r.items == []
    r = conv.respond("a funny movie")
    assert r.action == "ask" and r.slot == "decade"
    r = conv.respond("from the eighties")
    assert r.action == "recommend" and set(r.items) == {6, 11, 12} and "comedies from the 1980s" in r.text
    r = conv.respond("why the second one?")
    assert r.action == "explain" and "from the 1980s" in r.text and r.items == []
    r = conv.respond("no, none of those")
    assert r.action == "recommend" and not set(r.items) & {6, 11, 12}
    assert set(conv.state.rejected) == {6, 11, 12}
    chosen = r.items[0]
    r = conv.respond("yes, the first one")
    assert r.action == "close" and conv.state.accepted == chosen


def test_empty_foreign_and_useless_messages_get_a_clear_reply_then_popular_items(tools):
    conv = D.Conductor(tools, k=3)
    r = conv.respond("")
    assert r.intent == "unclear" and r.text.startswith("Your message was empty") and r.action == "ask"
    r = conv.respond("Ich möchte einen Film sehen, bitte")
    assert r.text.startswith("Sorry, I only understand English") and r.action == "fallback"
    assert r.items == [1, 2, 4] and "most popular" in r.text, "after two unclear turns: popular items, and say so"
    conv = D.Conductor(tools, k=3)
    conv.respond("a comedy")
    conv.respond("hmm")
    r = conv.respond("qwerty")
    assert r.action == "fallback" and all("Comedy" in tools.corpus.genres[tools.corpus.position[i]] for i in r.items), \
        "the fallback keeps any stated constraint"


def test_the_conductor_never_shows_an_item_twice_until_the_catalog_runs_out(tools, corpus):
    conv = D.Conductor(tools, ask_budget=0, k=5)
    shown = []
    for _ in range(5):
        r = conv.respond("no, something else")
        shown += r.items
    assert len(shown) == len(set(shown)) == len(corpus)
    assert "nothing left" in r.text and r.items == []


@pytest.mark.parametrize("text", [None, "", "🙂", "?" * 1000, "why", "yes", "no", "the third one", "1980", "I liked"])
def test_the_conductor_never_crashes(tools, text):
    conv = D.Conductor(tools, k=2)
    for _ in range(3):
        r = conv.respond(text)
        assert isinstance(r.text, str) and r.text and r.action in D.ACTIONS


def test_responses_name_catalog_titles_only(tools, corpus):
    s = D.record_shown(D.DialogueState(genres=["Comedy"]), [6, 11])
    text = D.write_response("recommend", s, corpus, [6, 11])
    assert "1. Airplane! (1980; comedy)" in text and "2. Raising Arizona (1987; comedy)" in text
    with pytest.raises(ValueError, match="unknown action"):
        D.write_response("dance", s, corpus)


# ----------------------------------------------------------------------------- the leak detector

def test_title_leaks_are_found_fuzzily_and_redacted():
    title = "The Usual Suspects"
    assert D.mentions_title("I want to see the usual suspects tonight", title)
    assert D.mentions_title("maybe Usual Suspect?", title), "a typo and no article still leak"
    assert not D.mentions_title("something with suspects in it", title)
    assert not D.mentions_title("", title)
    assert D.mentions_title("I loved Star Wars!", "Star Wars") and not D.mentions_title("a war in the stars", "Star Wars")
    assert D.redact_title("I want the Usual Suspects, really", title) == "I want [that movie], really"
    assert D.mentions_title("I liked It a lot", "It") and not D.mentions_title("it was fine", "It"), "short titles: case"
    assert D.mentions_title("Heat", "Heat") and not D.mentions_title("the heat is on", "Heat III: The Return")


def test_slot_agreement():
    t = D.Target(1, "Star Wars", ("Sci-Fi", "Action"), 1970)
    assert D.slot_agreement({**D.empty_slots(), "genres": ["Sci-Fi"]}, t) == "agrees"
    assert D.slot_agreement({**D.empty_slots(), "decade": 1970}, t) == "agrees"
    assert D.slot_agreement({**D.empty_slots(), "genres": ["Sci-Fi", "Comedy"]}, t) == "contradicts"
    assert D.slot_agreement({**D.empty_slots(), "banned": ["Action"]}, t) == "contradicts"
    assert D.slot_agreement({**D.empty_slots(), "decade": 1990}, t) == "contradicts"
    assert D.slot_agreement(D.empty_slots(), t) == "silent"


# ----------------------------------------------------------------------------- simulators and the loop

def targets(corpus):
    return [D.Target(11, "Raising Arizona", ("Comedy",), 1980, 6, "Airplane!", opening="vague", user=1),
            D.Target(4, "The Usual Suspects", ("Thriller", "Crime"), 1990, 8, "Heat", opening="genre", user=2),
            D.Target(5, "Casablanca", ("Romance", "War", "Drama"), 1940, None, None, user=3)]


def test_rule_simulator_answers_what_is_asked_and_never_names_the_target(corpus):
    sim = D.RuleSimulator()
    t = targets(corpus)[1]
    assert sim.utter([D.SimContext(t, 1)]) == ["Hi! I would like a thriller."]
    ask = D.Reply("?", "ask", [], "request", D.empty_slots(), slot="decade")
    assert sim.utter([D.SimContext(t, 2, ask, ("genre:Thriller",))]) == ["Something from the 1990s."]
    rec = D.Reply("...", "recommend", [1], "constraint", D.empty_slots())
    said = sim.utter([D.SimContext(t, 3, rec, ("genre:Thriller", "decade"))])[0]
    assert said == "No, none of those. I would like a crime movie."
    assert D.RuleSimulator("paraphrase").say(t, "genre:Crime") == "I would like a gangster film."
    with pytest.raises(ValueError):
        D.RuleSimulator("shouting")


def test_dialogues_with_the_rule_simulator(tools, corpus):
    ts = targets(corpus)
    logs = D.run_dialogues(ts, D.RuleSimulator(), lambda t: D.Conductor(tools, ask_budget=2, k=2), max_turns=5)
    assert [lg.found_at for lg in logs][:2] == [3, 2], "vague opening: two questions; a genre given: one"
    for lg in logs:
        assert not any(t["leak"] for t in lg.turns)
        shown = [i for t in lg.turns for i in t["items"]]
        assert len(shown) == len(set(shown)), "never shown twice"
        assert len(lg.turns) == (lg.found_at or 5)
        assert "USER:" in lg.transcript()
    m = D.success_matrix(logs, 5)
    assert m.shape == (3, 5) and np.all(np.diff(m, axis=1) >= 0), "success@t never decreases"
    out = D.summarize(logs, 5)
    assert out["n"] == 3 and out["title_leaks"] == 0 and out["success@3"][0] >= 2 / 3
    assert out["success@3"][1] <= out["success@3"][0] <= out["success@3"][2]


class Leaky:
    """A simulator that says its target's title every time."""
    name = "leaky"

    def utter(self, contexts):
        return [f"I want {c.target.title} from the {c.target.decade}s" for c in contexts]


def test_leaks_are_counted_and_redacted_before_the_conductor_reads_them(tools, corpus):
    logs = D.run_dialogues(targets(corpus)[:2], Leaky(), lambda t: D.Conductor(tools, k=2), max_turns=2)
    assert D.summarize(logs, 2)["title_leaks"] == sum(len(lg.turns) for lg in logs) > 0
    for lg in logs:
        for t in lg.turns:
            assert "[that movie]" in t["user"] and lg.target.title not in t["user"] and lg.target.title in t["raw"]


def test_list_success_of_a_fixed_list():
    ts = [D.Target(5, "x", ("Drama",), 1990), D.Target(9, "y", ("Drama",), 1990)]
    m = D.list_success([[1, 2, 3, 4, 5, 6], [1, 2]], ts, k=2, max_turns=3)
    assert m.tolist() == [[0, 0, 1], [0, 0, 0]]


def test_llm_simulator_prompt_and_batched_replies(corpus):
    lm = tiny_lm()
    sim = D.LLMSimulator(lm, max_new_tokens=4, batch_size=2, stop_at_blank_line=False)
    ts = targets(corpus)
    p = sim.prompt(D.SimContext(ts[0], 1))
    assert "never say its title" in p and "Raising Arizona" in p and "comedy" in p and "1980s" in p
    said = sim.utter([D.SimContext(t, 1) for t in ts])
    assert len(said) == 3 and all(isinstance(s, str) for s in said)
    reply = D.Reply("Which decade?", "ask", [], "request", D.empty_slots(), slot="decade")
    p2 = sim.prompt(D.SimContext(ts[0], 2, reply), sim.memory[(1, 11)])
    assert "Which decade?" in p2 and "Hello! What would you like to watch?" in p2, "the last exchange is kept"
    assert D.LLMSimulator.clean('"First line. Second one. Third."\nrest') == "First line. Second one."


def test_make_targets_uses_held_out_items_and_a_liked_film(corpus):
    inter = pd.DataFrame({"user": [7] * 4 + [8] * 4, "item": [1, 2, 3, 11, 4, 5, 6, 8],
                          "rating": [5, 2, 5, 4, 1, 2, 5, 3], "timestamp": range(8)})
    split = prep.leave_one_out(inter)
    users = np.arange(1, split.n_users + 1)
    ts = D.make_targets(split, corpus, users, "test", seed=0)
    assert [t.item for t in ts] == [11, 8]
    assert ts[0].liked == 3 and ts[1].liked == 6, "the most recent film rated 4+ seen before the test item"
    assert ts[0].title == "Raising Arizona" and ts[0].decade == 1980 and set(ts[1].genres) == {"Action", "Crime", "Thriller"}
    valid = D.make_targets(split, corpus, users, "valid")
    assert [t.item for t in valid] == [3, 6] and valid[0].liked == 1
    assert valid[1].liked == 5, "no film rated 4+ before the validation item: the most recent one"


def test_chat_widget_runs_without_a_frontend(tools):
    pytest.importorskip("ipywidgets")
    conv = D.Conductor(tools, k=2)
    w = D.chat_widget(conv)
    box, send = w.children[0].children[0], w.children[0].children[1]
    box.value = "a comedy from the 80s"
    send.click()
    assert len(conv.log) == 1 and conv.log[0][1].action == "recommend" and box.value == ""
    log_html = w.children[1].children[0].children[0].value
    assert "a comedy from the 80s" in log_html and "Airplane!" in log_html


def test_item_at():
    assert D.item_at([4, 5, 6], 1) == 4 and D.item_at([4, 5, 6], -1) == 6 and D.item_at([4, 5, 6], 3) == 6
    assert D.item_at([4, 5, 6], 4) is None and D.item_at([4, 5, 6], 0) is None
    assert D.item_at([], 1) is None and D.item_at([4], None) is None
