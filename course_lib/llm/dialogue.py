r"""The LLM as conductor, part two: a conversational recommender and the simulated users it is tested on.

A conversational recommender runs one loop per user message (RecLLM's "LLM as conductor"):

.. math::

   \text{intent}_t, \text{slots}_t = \mathrm{NLU}(u_t), \qquad
   s_t = \mathrm{update}(s_{t-1}, \text{intent}_t, \text{slots}_t), \qquad
   a_t = \pi(s_t), \qquad
   r_t = \mathrm{respond}(a_t, s_t, \mathrm{tools}(s_t))

* **understand** the message (:func:`parse_slots`, :func:`classify_intent`): one of
  :data:`INTENTS`, and the slots it fills: wanted and banned genres, a decade, liked or
  disliked films (grounded to catalog IDs with rapidfuzz, never kept as free text), other words;
* **track** the dialogue state (:class:`DialogueState`, :func:`update_state`, a pure function);
* **decide** what to do next (:func:`choose_action`, a pure function of the state): ask a
  clarifying question, recommend, explain, fall back to popular items after unclear turns, close;
* **act** with tools, never from memory (:func:`recommend_items`): the catalog's structured
  filter (genres, decade; relaxed step by step when too few items match), a retriever of
  :mod:`course_lib.llm.conductor` (BM25, dense or hybrid) on the state as a query, the training
  popularity and optionally a course recommender folded in from the liked films
  (:func:`fold_in_scorer`), fused by weighted reciprocal-rank fusion. The result passes
  :func:`~course_lib.llm.conductor.only_retrieved`: an ID that the tools did not return, or one
  already shown or rejected, never reaches the user;
* **write** the reply from templates (:func:`write_response`).

:class:`Conductor` wires the five together behind ``respond(text)``; :func:`chat_widget` puts
it in a notebook. Every step except the simulator is rule-based and needs no language model.

Testing a dialogue system needs users. Two **user simulators** share one interface,
``utter(contexts) -> list[str]``, each pursuing a hidden :class:`Target` (a held-out item of a
real user: its genres, decade, and a film the user liked):

* :class:`RuleSimulator`: templated answers from the target's metadata (the controlled baseline);
* :class:`LLMSimulator`: a small instruction-tuned LM prompted with a persona and the target,
  replies batched across dialogues, greedy, a few dozen tokens.

:func:`run_dialogues` plays them against conductors; a target is **found** at turn ``t`` when it
is among the items shown at turn ``t`` (the simulator's acceptance is decided by this oracle,
for both simulators). Every simulated utterance passes :func:`mentions_title`, a fuzzy leak
detector: a simulator that says the hidden title is counted, and the title is redacted
(:func:`redact_title`) before the conductor reads it. :func:`slot_agreement` measures whether
what a simulator says agrees with its hidden target (on-persona) or contradicts it.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from .conductor import (DECADE_WORDS, GENRE_WORDS, NO_ITEM, Corpus, Retriever, decade_of, decade_phrase,
                        only_retrieved, rrf, tokenize)
from .generator import THRESHOLD, TitleIndex, ground, normalize_title
from .verbalize import clean_title

INTENTS = ("request", "constraint", "like", "dislike", "ask_why", "accept", "chitchat", "unclear")
"""What a user message does: asks for a film with no preference given (``request``), states a
preference (``constraint``), names a film they liked / disliked or rejects what was shown
(``like`` / ``dislike``), asks why (``ask_why``), takes a shown film (``accept``), small talk
(``chitchat``), or nothing the system understands (``unclear``: empty, another language, noise)."""

ACTIONS = ("ask", "recommend", "explain", "fallback", "close")
"""What the system does next (:func:`choose_action`)."""

SLOTS = ("genre", "decade", "liked")
"""What a clarifying question asks for, in this order (:func:`next_question`)."""

# ============================================================================= 1. understanding a message

# genre label -> word patterns (regular expressions matched on whole words, lower case). The
# paraphrases of conductor.GENRE_WORDS ("a funny movie", "a cowboy film") are all covered.
GENRE_LEXICON: dict[str, tuple[str, ...]] = {
    "Action": (r"action", r"fights?", r"fighting", r"explosions?", r"shoot ?outs?", r"car chases?"),
    "Adventure": (r"adventures?", r"adventurous", r"daring journey", r"journey", r"quest", r"treasure hunt"),
    "Animation": (r"animated", r"animation", r"cartoons?", r"anime"),
    "Children's": (r"children'?s?", r"kids?", r"family film", r"family movie", r"for the family"),
    "Comedy": (r"comed(?:y|ies)", r"funny", r"humou?r\w*", r"laughs?", r"hilarious", r"comic", r"romcom"),
    "Crime": (r"crime", r"gangsters?", r"heists?", r"mafia", r"mobsters?", r"criminals?"),
    "Documentary": (r"documentar(?:y|ies)", r"non-?fiction", r"real events"),
    "Drama": (r"dramas?", r"dramatic", r"serious", r"emotional"),
    "Fantasy": (r"fantasy", r"magic\w*", r"fairy ?tales?", r"wizards?", r"dragons?"),
    "Film-Noir": (r"film[- ]noir", r"noir", r"black[- ]and[- ]white"),
    "Horror": (r"horror", r"scary", r"frightening", r"terrifying", r"creepy", r"spooky", r"monsters?"),
    "Musical": (r"musicals?", r"sing", r"singing", r"songs?"),
    "Mystery": (r"myster(?:y|ies|ious)", r"whodunn?its?"),
    "Romance": (r"romance", r"romantic", r"romcom", r"love stor(?:y|ies)", r"in love"),
    "Sci-Fi": (r"sci-?fi", r"science[- ]fiction", r"outer space", r"space", r"futuristic", r"robots?"),
    "Thriller": (r"thrillers?", r"suspense\w*", r"thrilling", r"tense"),
    "War": (r"war", r"soldiers?", r"battles?", r"military"),
    "Western": (r"westerns?", r"cowboys?", r"wild west"),
}
_GENRE_RE = {g: re.compile(r"\b(?:" + "|".join(p) + r")\b") for g, p in GENRE_LEXICON.items()}
_NEGATORS = {"no", "not", "don't", "dont", "nothing", "without", "hate", "hated", "avoid", "except", "never",
             "isn't", "aren't", "neither", "nor", "dislike", "disliked", "less", "stop", "t"}
_DECADE_WORD_RE = re.compile(r"\b(" + "|".join(DECADE_WORDS.values()) + r")\b")
_DECADE_NUM_RE = re.compile(r"\b(?:19)?([2-9])0'?s\b")
_YEAR_RE = re.compile(r"\b(19[2-9]\d)\b")
_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4,
             "fifth": 5, "5th": 5, "last": -1}
_ORDINAL_RE = re.compile(r"\b(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|last)\b|(?:number|no\.?|#)\s*([1-9])\b")
_LIKE_RE = re.compile(r"\b(?:i\s+(?:really\s+|also\s+)?(?:liked|loved|enjoyed|adored|like|love)|"
                      r"(?:something|anything|movies?|films?|one)\s+like|similar to|such as|a fan of|"
                      r"favou?rite (?:movie|film) (?:is|was))\s+")
_DISLIKE_RE = re.compile(r"\b(?:i\s+(?:hated|disliked|didn'?t like|did not like|don'?t like|do not like|can'?t stand)|"
                         r"nothing like|not like)\s+")
_WHY_RE = re.compile(r"\bwhy\b|\bhow come\b|\bwhat makes\b|\bexplain\b")
_ACCEPT_RE = re.compile(r"\b(?:yes|yeah|yep|great|perfect|sounds good|i'?ll (?:watch|take)|that one|exactly|"
                        r"i'?ll go with|let'?s go with|sold)\b")
_REJECT_RE = re.compile(r"^\W*(?:no|nope|nah)\s*(?:$|[,.!;])|\bnone\b|"
                        r"\bnot (?:those|these|that one|them)\b|\bsomething else\b|\bother ones?\b|"
                        r"\bseen (?:it|them|those)\b|\bboring\b|\b(?:don'?t|do not) like (?:those|these|them|any)\b")
_REQUEST_RE = re.compile(r"\b(?:recommend\w*|suggest\w*|looking for|want to (?:watch|see)|movie|film|watch|"
                         r"something|anything|ideas?|tonight)\b")
_CHITCHAT_RE = re.compile(r"\b(?:hi|hello|hey|thanks|thank you|bye|goodbye|how are you|good (?:morning|evening)|"
                          r"yes|ok|okay|sure|cool)\b")
_STOP = frozenset("""a an the and or but of from in on at to for with by about is are be was were that this it its
i i'm im i'd id me my we you your some something any anything one please want would like love looking find
recommend suggest show give movie movies film films watch see tonight maybe really just also very so can could
what which who how do does did have has had there here them those these then than more most much too well good
great nice okay ok yes no not none thanks thank hi hello hey sure mood kind sort type genre decade something's
liked loved hated disliked enjoyed adored why first second third fourth fifth last made one ones those these else
other mind don't dont time period era prefer say tell think feel know name fan
""".split())
_ENGLISH = frozenset("""i you he she we they it a an the is are was be to of and or but for with from in on at
my me your this that some something anything what which how why can could would should please want like liked
love loved not no yes hi hello hey thanks thank maybe just really good great nice old new""".split())
FOREIGN_SHARE = 0.3   # share of non-ASCII letters above which a message counts as another language


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _negated(text: str, start: int, window: int = 3) -> bool:
    """True when one of the ``window`` words before position ``start``, in the same clause, negates
    what follows ("no horror", "not too scary", "I don't want a war movie"; not "no, a comedy")."""
    clause = re.split(r"[.;:!?,]|\bbut\b", text[:start].lower())[-1]     # a negation ends with its clause
    before = re.findall(r"[a-z']+", clause)[-window:]
    return any(w in _NEGATORS or w.endswith("n't") for w in before)


def parse_genres(text: str) -> tuple[list[str], list[str]]:
    """``(wanted, banned)`` catalog genre labels named in ``text``, in order of first mention.

    A mention counts as banned when one of the three words before it negates it; a genre both
    wanted and banned in one message stays banned."""
    low = text.lower()
    wanted, banned = [], []
    hits = sorted((m.start(), g) for g, rx in _GENRE_RE.items() for m in rx.finditer(low))
    for start, g in hits:
        (banned if _negated(low, start) else wanted).append(g)
    banned = list(dict.fromkeys(banned))
    return [g for g in dict.fromkeys(wanted) if g not in banned], banned


def parse_decade(text: str) -> int | None:
    """The decade a message asks for: ``"80s"``, ``"1980s"``, ``"eighties"``, or a year (``"from 1985"``);
    the last mention wins; None when there is none."""
    low = text.lower()
    found = []
    for m in _DECADE_NUM_RE.finditer(low):
        found.append((m.start(), 1900 + 10 * int(m.group(1))))
    for m in _DECADE_WORD_RE.finditer(low):
        found.append((m.start(), {w: d for d, w in DECADE_WORDS.items()}[m.group(1)]))
    for m in _YEAR_RE.finditer(low):
        found.append((m.start(), int(m.group(1)) // 10 * 10))
    return max(found)[1] if found else None


def parse_ordinal(text: str) -> int | None:
    """The position a message points at in the last list (1-based; -1 for "the last one"), or None."""
    m = _ORDINAL_RE.search(text.lower())
    if not m:
        return None
    return _ORDINALS[m.group(1)] if m.group(1) else int(m.group(2))


def _span_title(span: str, index: TitleIndex, threshold: float, max_words: int = 8) -> tuple[int, float, int]:
    """The best-grounded word prefix of ``span``: ``(item, score, characters used)``; ``NO_ITEM`` when
    no prefix reaches the threshold. One-word prefixes must match a title exactly."""
    words = list(re.finditer(r"[^\s]+", span))[:max_words]
    best = (NO_ITEM, 0.0, 0)
    for n in range(len(words), 0, -1):
        end = words[n - 1].end()
        text = span[:end].strip(" \"'“”,.;:!?")
        key = normalize_title(text)
        if len(key) < 3:
            continue
        m = ground([text], index, threshold if n > 1 else 100.0)[0]
        if m.item != NO_ITEM and m.score > best[1]:
            best = (m.item, m.score, end)
    return best


def parse_titles(text: str, index: TitleIndex, threshold: float = THRESHOLD) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """``(liked, disliked, spans)``: catalog IDs of the films a message names after a cue ("I liked
    ...", "something like ...", "I hated ...") or in quotes (liked), and the character spans they
    occupy (so that their words are not read as genres). Titles are grounded to the catalog with
    rapidfuzz (:func:`~course_lib.llm.generator.ground`); a film the catalog does not carry is dropped."""
    low = text.lower()
    liked, disliked, spans = [], [], []
    cues = [(m.end(), False) for m in _LIKE_RE.finditer(low)] + [(m.end(), True) for m in _DISLIKE_RE.finditer(low)]
    cues += [(m.start(1), False) for m in re.finditer(r"[\"“]([^\"”]{2,80})[\"”]", text)]
    for start, negative in sorted(cues):
        if any(a <= start < b for a, b in spans):
            continue
        span = re.split(r"[.;!?\n]|\s+but\s|\s+from the\s", text[start:], maxsplit=1)[0]
        while span.strip():           # "I liked Alien and Heat": one title after another
            item, _, used = _span_title(span, index, threshold)
            if item == NO_ITEM:
                break
            (disliked if negative else liked).append(item)
            spans.append((start, start + used))
            more = re.match(r"[\s,]*(?:,|\band\b|\bor\b)\s*", span[used:])
            if not more:
                break
            start += used + more.end()
            span = span[used + more.end():]
    liked = list(dict.fromkeys(liked))
    return liked, [i for i in dict.fromkeys(disliked) if i not in liked], spans


def is_foreign(text: str) -> bool:
    """A rough "not English" test: many non-ASCII letters, or three or more words none of which is
    a common English function word or a word of :data:`GENRE_LEXICON` ("Bonjour, je voudrais un
    film" is foreign; "film" alone is no evidence of English)."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum(not c.isascii() for c in letters) / len(letters) > FOREIGN_SHARE:
        return True
    words = _words(text)
    genre_hit = any(rx.search(text.lower()) for rx in _GENRE_RE.values())
    return len(words) >= 3 and not genre_hit and not any(w in _ENGLISH for w in words)


def empty_slots() -> dict:
    """The slots of a message that says nothing."""
    return {"genres": [], "banned": [], "decade": None, "liked": [], "disliked": [], "keywords": [],
            "ordinal": None, "reject": False, "empty": False, "foreign": False}


def parse_slots(text: str, index: TitleIndex | None = None, threshold: float = THRESHOLD,
                vocab: set | frozenset | None = None) -> dict:
    """Everything a message says, as slots (see :func:`empty_slots` for the keys):

    ``genres`` / ``banned`` (catalog labels), ``decade`` (e.g. 1980), ``liked`` / ``disliked``
    (catalog IDs, grounded with ``index``), ``keywords`` (other content words, for the retriever),
    ``ordinal`` (a position in the last list), ``reject`` ("no", "none of these"), ``empty``,
    ``foreign`` (another language). With ``vocab`` (the catalog's words, :attr:`Tools.vocab`), only
    keywords a retriever can match are kept ("asdf" is noise, not a preference). Never raises."""
    slots = empty_slots()
    text = "" if text is None else str(text)
    if not text.strip():
        slots["empty"] = True
        return slots
    liked, disliked, spans = parse_titles(text, index, threshold) if index is not None and len(index) else ([], [], [])
    rest = text
    for a, b in sorted(spans, reverse=True):       # title words are not genre words ("Star Wars" is no war film)
        rest = rest[:a] + " " * (b - a) + rest[b:]
    genres, banned = parse_genres(rest)
    slots.update(genres=genres, banned=banned, decade=parse_decade(rest), liked=liked, disliked=disliked,
                 ordinal=parse_ordinal(rest), reject=bool(_REJECT_RE.search(rest.lower())))
    low = rest.lower()
    for rx in _GENRE_RE.values():
        low = rx.sub(" ", low)
    low = _DECADE_WORD_RE.sub(" ", _DECADE_NUM_RE.sub(" ", _YEAR_RE.sub(" ", low)))
    slots["keywords"] = [w for w in dict.fromkeys(tokenize(low)) if w not in _STOP and not w.isdigit() and len(w) > 2
                         and (vocab is None or w in vocab)]
    nothing = not (genres or banned or slots["decade"] or liked or disliked)
    slots["foreign"] = nothing and is_foreign(text)
    if slots["foreign"]:
        slots["keywords"] = []
    return slots


def classify_intent(text: str, slots: dict | None = None, has_shown: bool = False) -> str:
    """One of :data:`INTENTS`, by rules checked in order (the first that applies wins):

    empty or another language -> ``unclear``; "why" / "explain" -> ``ask_why``; after a list
    (``has_shown``), a yes-word with no new preference -> ``accept``; a disliked film, or a "no"
    after a list -> ``dislike``; a liked film -> ``like``; a genre, banned genre or decade ->
    ``constraint``; a request word ("recommend", "movie", "something") -> ``request``; a greeting
    or thanks -> ``chitchat``; content words only -> ``constraint`` (the retriever reads them);
    anything else -> ``unclear``."""
    slots = parse_slots(text) if slots is None else slots
    low = ("" if text is None else str(text)).lower()
    if slots["empty"] or slots["foreign"]:
        return "unclear"
    if _WHY_RE.search(low):
        return "ask_why"
    new_pref = bool(slots["genres"] or slots["banned"] or slots["decade"] or slots["liked"] or slots["disliked"])
    if has_shown and _ACCEPT_RE.search(low) and not slots["reject"] and not new_pref:
        return "accept"
    if slots["disliked"] or (has_shown and slots["reject"]):
        return "dislike"
    if slots["liked"]:
        return "like"
    if slots["genres"] or slots["banned"] or slots["decade"]:
        return "constraint"
    if _REQUEST_RE.search(low):
        return "request"
    if _CHITCHAT_RE.search(low):
        return "chitchat"
    if slots["keywords"]:
        return "constraint"
    return "unclear"


# ============================================================================= 2. the dialogue state

@dataclass
class DialogueState:
    """What the system knows after each turn. Items are catalog IDs, never titles.

    ``genres`` / ``banned``: wanted and excluded genre labels; ``decade``: e.g. 1980 or None;
    ``liked`` / ``disliked``: films the user named; ``keywords``: other words for the retriever;
    ``shown``: every item recommended so far (never shown twice); ``last_shown``: the latest list;
    ``rejected``: shown items the user turned down; ``accepted``: the item taken (ends the
    dialogue); ``asked``: the slots asked about so far (see :data:`SLOTS`); ``unclear_turns``:
    consecutive messages not understood; ``last_intent``; ``turn``: messages read so far."""
    genres: list = field(default_factory=list)
    banned: list = field(default_factory=list)
    decade: int | None = None
    liked: list = field(default_factory=list)
    disliked: list = field(default_factory=list)
    keywords: list = field(default_factory=list)
    shown: list = field(default_factory=list)
    last_shown: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    accepted: int | None = None
    asked: list = field(default_factory=list)
    unclear_turns: int = 0
    last_intent: str | None = None
    turn: int = 0

    def copy(self) -> "DialogueState":
        """An independent copy (its lists are new lists)."""
        return replace(self, **{k: list(v) for k, v in vars(self).items() if isinstance(v, list)})

    def known(self) -> bool:
        """True when the state holds any preference to search with."""
        return bool(self.genres or self.decade is not None or self.liked or self.keywords)

    def summary(self, corpus: Corpus | None = None) -> dict:
        """The state as a small dict for display (titles instead of IDs when ``corpus`` is given)."""
        def names(ids):
            return [corpus.title_of(i) if corpus is not None and int(i) in corpus.position else int(i) for i in ids]
        return {"genres": list(self.genres), "banned": list(self.banned), "decade": self.decade,
                "liked": names(self.liked), "disliked": names(self.disliked), "keywords": list(self.keywords),
                "shown": len(self.shown), "rejected": len(self.rejected),
                "accepted": names([self.accepted])[0] if self.accepted is not None else None,
                "asked": list(self.asked), "unclear_turns": self.unclear_turns, "turn": self.turn}


def _add(values: list, new: Sequence) -> list:
    return values + [v for v in dict.fromkeys(new) if v not in values]


def update_state(state: DialogueState, intent: str, slots: dict, max_keywords: int = 8) -> DialogueState:
    """The state after one user message: a **new** state, the input is left unchanged.

    1. ``turn`` + 1;
    2. each genre of ``slots["genres"]`` joins ``genres`` (and leaves ``banned``); each of
       ``slots["banned"]`` joins ``banned`` (and leaves ``genres``);
    3. a decade in the slots replaces the state's;
    4. each ID of ``slots["liked"]`` joins ``liked`` (and leaves ``disliked``), and the other way round;
    5. new keywords are appended (the last ``max_keywords`` kept);
    6. ``dislike`` with no disliked film named rejects the last list (only the item at
       ``slots["ordinal"]`` when one is given);
    7. ``accept`` takes the item at ``slots["ordinal"]`` of the last list (the first one by default);
    8. ``unclear_turns`` counts consecutive ``unclear`` messages (any other intent resets it to 0);
    9. ``last_intent`` = ``intent``.
    """
    if intent not in INTENTS:
        raise ValueError(f"unknown intent {intent!r}; choose among {INTENTS}")
    s = state.copy()
    s.turn += 1
    for g in slots.get("genres", []):
        s.genres = _add(s.genres, [g])
        s.banned = [b for b in s.banned if b != g]
    for g in slots.get("banned", []):
        s.banned = _add(s.banned, [g])
        s.genres = [w for w in s.genres if w != g]
    if slots.get("decade") is not None:
        s.decade = int(slots["decade"])
    for i in slots.get("liked", []):
        s.liked = _add(s.liked, [int(i)])
        s.disliked = [d for d in s.disliked if d != int(i)]
    for i in slots.get("disliked", []):
        s.disliked = _add(s.disliked, [int(i)])
        s.liked = [d for d in s.liked if d != int(i)]
    s.keywords = _add(s.keywords, slots.get("keywords", []))[-max_keywords:]
    picked = item_at(s.last_shown, slots.get("ordinal"))
    if intent == "dislike" and not slots.get("disliked"):
        s.rejected = _add(s.rejected, [picked] if picked is not None else s.last_shown)
    if intent == "accept" and s.last_shown:
        s.accepted = picked if picked is not None else s.last_shown[0]
    s.unclear_turns = state.unclear_turns + 1 if intent == "unclear" else 0
    s.last_intent = intent
    return s


def item_at(items: Sequence[int], ordinal: int | None) -> int | None:
    """The item at a 1-based ``ordinal`` of a list (-1: the last one); None when the ordinal is
    missing or out of range."""
    if ordinal is None or not items:
        return None
    j = ordinal - 1 if ordinal > 0 else ordinal
    return items[j] if -len(items) <= j < len(items) and ordinal != 0 else None


def record_shown(state: DialogueState, items: Sequence[int]) -> DialogueState:
    """A new state in which ``items`` were just shown (appended to ``shown``, and ``last_shown``)."""
    s = state.copy()
    s.last_shown = [int(i) for i in items]
    s.shown = _add(s.shown, s.last_shown)
    return s


def record_question(state: DialogueState, slot: str) -> DialogueState:
    """A new state in which the system has just asked about ``slot`` (one of :data:`SLOTS`)."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}; choose among {SLOTS}")
    s = state.copy()
    s.asked = s.asked + [slot]
    return s


# ============================================================================= 3. the policy

def choose_action(state: DialogueState, ask_budget: int = 2) -> str:
    """The next action (one of :data:`ACTIONS`), by rules checked in order:

    1. an item was accepted -> ``close``;
    2. the user asked "why" and something was shown -> ``explain``;
    3. two or more unclear messages in a row -> ``fallback`` (popular items, and say so);
    4. fewer than ``ask_budget`` questions asked, and nothing known to search with
       (:meth:`DialogueState.known`) or the genres or the decade still missing -> ``ask``;
    5. otherwise -> ``recommend``.

    ``ask_budget=0`` is the "recommend at once" policy: it never asks."""
    if state.accepted is not None:
        return "close"
    if state.last_intent == "ask_why" and state.last_shown:
        return "explain"
    if state.unclear_turns >= 2:
        return "fallback"
    if len(state.asked) < ask_budget and (not state.known() or not state.genres or state.decade is None):
        return "ask"
    return "recommend"


def next_question(state: DialogueState) -> str:
    """What to ask about (one of :data:`SLOTS`): the genres first, then the decade, then a liked film;
    a slot already asked or filled is skipped (a liked film when all are)."""
    filled = {"genre": bool(state.genres), "decade": state.decade is not None, "liked": bool(state.liked)}
    for slot in SLOTS:
        if not filled[slot] and slot not in state.asked:
            return slot
    for slot in SLOTS:
        if not filled[slot]:
            return slot
    return "liked"


# ============================================================================= 4. tools

@dataclass
class Tools:
    """What the conductor may call, all over the catalog ``corpus`` (IDs are ``corpus.ids``):

    ``retriever`` (:class:`~course_lib.llm.conductor.Retriever`: BM25, dense or hybrid);
    ``popularity``: one prior score per catalog item (training interactions by default; a course
    recommender's scores for one user, :func:`catalog_scores`, make it personal); ``similar``: optional
    ``liked IDs -> scores`` over the catalog (e.g. :func:`fold_in_scorer` of an ItemKNN);
    ``weights``: the share of each in the rank fusion (``retrieval``, ``popularity``, ``similar``);
    ``index``: the catalog's titles for grounding (built when not given); ``vocab``: the catalog's
    words (built)."""
    corpus: Corpus
    retriever: Retriever | None = None
    popularity: np.ndarray | None = None
    similar: Callable[[Sequence[int]], np.ndarray] | None = None
    weights: dict = field(default_factory=lambda: {"retrieval": 1.0, "popularity": 1.0, "similar": 1.0})
    index: TitleIndex | None = None

    def __post_init__(self):
        n = len(self.corpus)
        if self.popularity is None:
            self.popularity = (np.asarray(self.corpus.popularity, dtype=float) if self.corpus.popularity is not None
                               else np.zeros(n))
        self.popularity = np.asarray(self.popularity, dtype=float)
        if self.popularity.shape != (n,):
            raise ValueError(f"popularity needs one value per catalog item ({n}), got shape {self.popularity.shape}")
        unknown = set(self.weights) - {"retrieval", "popularity", "similar"}
        if unknown:
            raise ValueError(f"unknown weights {sorted(unknown)}: use 'retrieval', 'popularity', 'similar'")
        if self.index is None:
            self.index = TitleIndex.from_titles(self.corpus.ids.tolist(), self.corpus.titles)
        self.vocab = frozenset(w for t in self.corpus.texts for w in tokenize(t))


def catalog_columns(split, corpus: Corpus) -> np.ndarray:
    """For each catalog item (``corpus.ids``), its column in a course model's score matrix
    (``split.item_map``'s 1-based index); 0 (the padding column) for items the split never saw."""
    index = {int(r): j + 1 for j, r in enumerate(split.item_map.raw.tolist())}
    return np.asarray([index.get(int(i), 0) for i in corpus.ids], dtype=np.int64)


def catalog_scores(model, split, corpus: Corpus, users: Sequence[int], histories: Sequence[np.ndarray]) -> np.ndarray:
    """``(len(users), len(corpus))``: a fitted course recommender's scores for encoded ``users`` with
    their ``histories``, in catalog order (items the model never saw: ``-inf``). A row is a
    per-user prior to pass as :attr:`Tools.popularity` (the conductor with a personal ranker)."""
    cols = catalog_columns(split, corpus)
    s = model.score(np.asarray(users, dtype=np.int64), list(histories))
    s = np.asarray(s.detach().cpu().numpy() if hasattr(s, "detach") else s, dtype=float)[:, cols]
    s[:, cols == 0] = -np.inf
    return s


def fold_in_scorer(model, split, corpus: Corpus) -> Callable[[Sequence[int]], np.ndarray]:
    """Wrap a fitted course recommender that scores from a history alone (ItemKNN, Item2Vec,
    SASRec, ...) as a ``liked catalog IDs -> scores over corpus.ids`` tool: the liked films are
    its history (a fold-in of a new user, :func:`catalog_scores` with user 0). Items the model
    never saw score ``-inf``; with no known liked film every item scores 0."""
    index = {int(r): j + 1 for j, r in enumerate(split.item_map.raw.tolist())}

    def similar(liked: Sequence[int]) -> np.ndarray:
        hist = np.asarray([index[int(i)] for i in liked if int(i) in index], dtype=np.int64)
        if len(hist) == 0:
            return np.zeros(len(corpus))
        return catalog_scores(model, split, corpus, [0], [hist])[0]
    return similar


def state_query(state: DialogueState, corpus: Corpus | None = None) -> str:
    """The state as a retrieval query: ``"a comedy that is also a horror movie from the 1980s like
    Ghostbusters; monsters"`` (genre words of :data:`~course_lib.llm.conductor.GENRE_WORDS`); ``""``
    when nothing is known."""
    parts = []
    nouns = [GENRE_WORDS[g][0] if g in GENRE_WORDS else g.lower() for g in state.genres]
    if nouns:
        parts.append(nouns[0] + "".join(f" that is also {n}" for n in nouns[1:]))
    if state.decade is not None:
        parts.append(decade_phrase(state.decade, "literal"))
    if state.liked and corpus is not None:
        parts.append("like " + ", ".join(corpus.title_of(i) for i in state.liked[-2:] if int(i) in corpus.position))
    text = " ".join(parts)
    if state.keywords:
        text = (text + "; " if text else "") + " ".join(state.keywords)
    return text


def constraint_mask(corpus: Corpus, genres: Sequence[str] = (), decade: int | None = None,
                    banned: Sequence[str] = ()) -> np.ndarray:
    """Boolean mask of the catalog items with every genre of ``genres``, none of ``banned``, from
    ``decade`` (any decade when None): the structured filter tool."""
    mask = np.ones(len(corpus), dtype=bool)
    if decade is not None:
        mask &= corpus.decades == int(decade)
    for g in genres:
        mask &= corpus.genre_matrix[:, corpus.labels.index(g)] if g in corpus.labels else False
    for g in banned:
        if g in corpus.labels:
            mask &= ~corpus.genre_matrix[:, corpus.labels.index(g)]
    return mask


def relaxations(state: DialogueState) -> list[tuple[tuple, int | None, str]]:
    """The filters to try, strictest first, as ``(genres, decade, what was dropped)``: all
    constraints; without the decade; the first genre only (with, then without the decade);
    no genre. Banned genres are never dropped."""
    g, d = tuple(state.genres), state.decade
    steps = [(g, d, "")]
    if d is not None:
        steps.append((g, None, "the decade"))
    if len(g) > 1:
        steps += [(g[:1], d, "some genres")] + ([(g[:1], None, "some genres and the decade")] if d is not None else [])
    if g:
        steps.append(((), d, "the genres"))
        if d is not None:
            steps.append(((), None, "the genres and the decade"))
    return list(dict.fromkeys(steps))


def recommend_items(state: DialogueState, tools: Tools, k: int = 5, popular_only: bool = False,
                    ) -> tuple[list[int], str]:
    """Up to ``k`` catalog IDs for the state, and a note naming the constraints dropped to fill the list.

    Candidates pass the structured filter (:func:`constraint_mask`) and exclude everything shown,
    rejected, liked or disliked. They are ordered by weighted reciprocal-rank fusion
    (:func:`~course_lib.llm.conductor.rrf`) of the retriever's scores for :func:`state_query`, the
    popularity, and the ``similar`` tool on the liked films; ``popular_only`` uses popularity
    alone (the fallback). When fewer than ``k`` items meet every constraint, the list is filled
    from the next filters of :func:`relaxations`, strictest first. The output passes
    :func:`~course_lib.llm.conductor.only_retrieved` against the filtered pools: no ID outside
    the tools' candidates, none twice."""
    corpus = tools.corpus
    seen = set(map(int, state.shown)) | set(map(int, state.rejected)) | set(map(int, state.liked)) | set(
        map(int, state.disliked))
    allowed = np.asarray([int(i) not in seen for i in corpus.ids])
    w = {"retrieval": 1.0, "popularity": 1.0, "similar": 1.0, **tools.weights}
    mats, weights = [tools.popularity[None, :]], [1.0 if popular_only else w["popularity"]]
    query = state_query(state, corpus)
    if not popular_only and tools.retriever is not None and query and w["retrieval"] > 0:
        mats.append(np.asarray(tools.retriever.scores([query]), dtype=float))
        weights.append(w["retrieval"])
    if not popular_only and tools.similar is not None and state.liked and w["similar"] > 0:
        mats.append(np.asarray(tools.similar(state.liked), dtype=float)[None, :])
        weights.append(w["similar"])
    fused = rrf(mats, weights)[0]
    out, pool, notes = [], set(), []
    for genres, decade, dropped in relaxations(state):
        mask = allowed & constraint_mask(corpus, genres, decade, state.banned)
        pool |= set(corpus.ids[mask].tolist())
        order = np.argsort(-np.where(mask, fused, -np.inf), kind="stable")
        before = len(out)
        for j in order[: k + len(out)]:
            if len(out) == k or not mask[j]:
                break
            if int(corpus.ids[j]) not in out:
                out.append(int(corpus.ids[j]))
        if len(out) > before and dropped:
            notes.append(dropped)
        if len(out) == k:
            break
    ids = [i for i in only_retrieved(out, sorted(pool)) if i not in seen][:k]
    return ids, (notes[0] if notes else ("nothing left to show" if not ids else ""))


# ============================================================================= 5. writing the reply

QUESTIONS = {   # open questions: examples in a question ("a comedy, a thriller?") are what a small model repeats
    "genre": "What kind of film are you in the mood for?",
    "decade": "From which period would you like it?",
    "liked": "Tell me a film you liked, and I will look for similar ones.",
}


def _plural(genre: str) -> str:
    noun = GENRE_WORDS.get(genre, (genre.lower(),))[0]
    noun = re.sub(r"^(an?|the)\s+", "", noun)
    return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"


def describe_request(state: DialogueState) -> str:
    """``"comedies from the 1980s"``, ``"films"`` when nothing is known (for the reply's first line)."""
    what = " and ".join(_plural(g) for g in state.genres[:2]) if state.genres else "films"
    if state.decade is not None:
        what += f" from the {state.decade}s"
    if state.banned:
        what += " with no " + " or ".join(GENRE_WORDS.get(b, (b,))[0].split(" ", 1)[-1].replace(" movie", "")
                                          for b in state.banned)
    return what


def item_line(corpus: Corpus, item: int) -> str:
    """``"Ghostbusters (1984; comedy, horror)"``."""
    j = corpus.position[int(item)]
    year = corpus.years[j]
    genres = ", ".join(g.lower() for g in corpus.genres[j])
    inner = "; ".join(x for x in (str(year) if year else "", genres) if x)
    return f"{corpus.titles[j]} ({inner})" if inner else corpus.titles[j]


def explain_item(state: DialogueState, corpus: Corpus, item: int) -> str:
    """Why an item was shown, from the state and its metadata only (never invented): the constraints
    it meets and the liked films it was matched with."""
    j = corpus.position[int(item)]
    reasons = []
    met = [g for g in state.genres if g in corpus.genres[j]]
    if met:
        reasons.append("it is " + " and ".join(GENRE_WORDS.get(g, (g,))[0] for g in met))
    if state.decade is not None and decade_of(corpus.years[j]) == state.decade:
        reasons.append(f"it is from the {state.decade}s")
    if state.liked:
        reasons.append("it was ranked close to " + ", ".join(corpus.title_of(i) for i in state.liked[-2:]))
    if not reasons:
        reasons.append("it is among the most watched films that fit what you said")
    return f"{corpus.titles[j]}: " + "; ".join(reasons) + "."


def write_response(action: str, state: DialogueState, corpus: Corpus, items: Sequence[int] = (), note: str = "",
                   slot: str | None = None, intent: str | None = None, slots: dict | None = None) -> str:
    """The reply text, from templates. ``items`` are the IDs the tools returned (recommend, fallback,
    explain); ``slot`` is the question's topic (ask); ``note`` names dropped constraints; the
    message's ``intent`` and ``slots`` add a first sentence for empty, foreign or unclear input."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; choose among {ACTIONS}")
    slots = slots or {}
    lead = ""
    if slots.get("empty"):
        lead = "Your message was empty. "
    elif slots.get("foreign"):
        lead = "Sorry, I only understand English for now. "
    elif intent == "unclear":
        lead = "Sorry, I did not understand that. "
    elif intent == "chitchat":
        lead = "Hello! "
    if action == "close":
        return lead + f"Enjoy {corpus.title_of(state.accepted)}!" if state.accepted is not None else lead + "Enjoy!"
    if action == "ask":
        return lead + QUESTIONS[slot or "genre"]
    if action == "explain":
        return lead + " ".join(explain_item(state, corpus, i) for i in items)
    if not items:
        return lead + "I have nothing left to show that fits; tell me something else you like."
    lines = "\n".join(f"{n}. {item_line(corpus, i)}" for n, i in enumerate(items, 1))
    if action == "fallback":
        said = describe_request(state)
        head = ("I could not make out what you are looking for, so here are the most popular "
                + (said if said != "films" else "films") + ":")
        return lead + head + "\n" + lines + "\nTell me a genre, a decade or a film you liked, and I can do better."
    head = f"Here are {len(items)} {describe_request(state)}"
    if note:
        head += f" (too few films match everything, so some of these drop {note})"
    return lead + head + ":\n" + lines + "\nDoes one of them appeal? You can also ask why."


# ============================================================================= 6. the conductor

@dataclass
class Reply:
    """One system turn: the text, the action, the item IDs shown (or explained), and what was understood."""
    text: str
    action: str
    items: list
    intent: str
    slots: dict
    slot: str | None = None    # the question's topic when action == "ask"


class Conductor:
    """A conversational recommender: ``respond(text)`` runs understand -> update -> decide -> act ->
    write for one user message and returns a :class:`Reply`. ``ask_budget`` is the policy (0:
    recommend at once; 2: ask up to two questions first), ``k`` the items shown per list."""

    def __init__(self, tools: Tools, ask_budget: int = 2, k: int = 5):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if ask_budget < 0:
            raise ValueError(f"ask_budget must be >= 0, got {ask_budget}")
        self.tools, self.ask_budget, self.k = tools, int(ask_budget), int(k)
        self.reset()

    def reset(self) -> None:
        """Start a new conversation."""
        self.state = DialogueState()
        self.log: list[tuple[str, Reply]] = []

    def respond(self, text: str) -> Reply:
        """The reply to one user message (any string, empty or not; never raises on input)."""
        text = "" if text is None else str(text)
        slots = parse_slots(text, self.tools.index, vocab=self.tools.vocab)
        intent = classify_intent(text, slots, has_shown=bool(self.state.last_shown))
        state = update_state(self.state, intent, slots)
        action = choose_action(state, self.ask_budget)
        items, note, slot = [], "", None
        if action == "ask":
            slot = next_question(state)
            state = record_question(state, slot)
        elif action in ("recommend", "fallback"):
            items, note = recommend_items(state, self.tools, self.k, popular_only=action == "fallback")
            state = record_shown(state, items)
        elif action == "explain":
            one = item_at(state.last_shown, slots.get("ordinal"))
            items = [one] if one is not None else list(state.last_shown)
        self.state = state
        reply = Reply(write_response(action, state, self.tools.corpus, items, note, slot, intent, slots),
                      action, list(items) if action != "explain" else [], intent, slots, slot)
        self.log.append((text, reply))
        return reply


# ============================================================================= 7. simulated users

@dataclass(frozen=True)
class Target:
    """A simulated user's hidden goal: catalog item ``item`` with its ``title``, ``genres`` (in the
    order the user reveals them), ``decade``, a film the user really ``liked`` (from their history),
    a ``persona`` sentence, and how the user opens (``"vague"`` or ``"genre"``)."""
    item: int
    title: str
    genres: tuple
    decade: int | None
    liked: int | None = None
    liked_title: str | None = None
    persona: str = ""
    opening: str = "vague"
    user: int = 0


def make_targets(split, corpus: Corpus, users: Sequence[int], stage: str = "test", seed: int = 0,
                 users_frame=None, vague_share: float = 0.5) -> list[Target]:
    """One :class:`Target` per user: the user's held-out ``stage`` item (``split.targets(stage)``),
    and a liked film, the most recent item rated 4 or more that the user had seen before ``stage``
    (the most recent one when none is). Targets with no known genre or year are skipped (the
    simulator could not describe them). ``users`` are encoded user IDs; ``users_frame`` (optional,
    raw ``user, age, gender, occupation``) gives a persona via
    :func:`~course_lib.llm.verbalize.user_profile`."""
    import pandas as pd
    from .verbalize import user_profile
    rng = np.random.default_rng(seed)
    held = split.targets(stage).drop_duplicates("user", keep="last").set_index("user")["item"]
    frames = [split.train] if stage == "valid" else [split.train, split.valid]
    seen = pd.concat([f for f in frames if len(f)], ignore_index=True)
    has_rating = "rating" in seen.columns
    by_user = {u: g for u, g in seen.groupby("user")}
    people = users_frame.set_index("user") if users_frame is not None else None
    out = []
    for u in users:
        u = int(u)
        if u not in held.index or u not in by_user:
            continue
        item = int(split.item_map.decode([int(held[u])])[0])
        if item not in corpus.position:
            continue
        j = corpus.position[item]
        genres, decade = list(corpus.genres[j]), decade_of(corpus.years[j])
        if not genres or decade is None:
            continue
        rng.shuffle(genres)
        g = by_user[u]
        good = g[g["rating"] >= 4] if has_rating else g
        pick = good if len(good) else g
        liked = int(split.item_map.decode([int(pick["item"].iloc[-1])])[0])
        raw_user = split.user_map.decode([u])[0]
        persona = ""
        if people is not None and raw_user in people.index:
            p = people.loc[raw_user]
            persona = user_profile(p.get("age"), p.get("gender"), p.get("occupation"))
        out.append(Target(item, corpus.title_of(item), tuple(genres), decade, liked,
                          corpus.title_of(liked) if liked in corpus.position else None, persona,
                          "vague" if rng.random() < vague_share else "genre", u))
    return out


@dataclass
class SimContext:
    """What a simulator sees before it speaks: its target, the turn (1 = the opening message),
    and the system's last reply (None before the first)."""
    target: Target
    turn: int
    reply: Reply | None = None
    revealed: tuple = ()      # facts the user has already given ("genre:Comedy", "decade", "liked")


class RuleSimulator:
    """A templated user: opens vaguely or with one genre, answers each question from the target's
    metadata, and after a list without its target says "no" and adds the next fact it has not
    given yet (a genre, the decade, another genre, the liked film). ``style``: ``"literal"``
    ("a comedy", "from the 1980s") or ``"paraphrase"`` ("a funny movie", "made in the eighties")."""
    name = "rule-based"

    def __init__(self, style: str = "literal"):
        if style not in ("literal", "paraphrase"):
            raise ValueError("style must be 'literal' or 'paraphrase'")
        self.style = style

    def facts(self, t: Target) -> list[str]:
        """Everything this user can say, in the order it says it."""
        out = [f"genre:{g}" for g in t.genres[:1]] + (["decade"] if t.decade is not None else [])
        out += [f"genre:{g}" for g in t.genres[1:2]] + (["liked"] if t.liked_title else [])
        return out

    def say(self, t: Target, fact: str) -> str:
        if fact.startswith("genre:"):
            return f"I would like {GENRE_WORDS[fact[6:]][0 if self.style == 'literal' else 1]}."
        if fact == "decade":
            return f"Something {decade_phrase(t.decade, self.style)}."
        return f"I liked {t.liked_title}."

    def next_fact(self, ctx: SimContext, wanted: str | None = None) -> str | None:
        left = [f for f in self.facts(ctx.target) if f not in ctx.revealed]
        if wanted is not None:
            match = [f for f in left if f == wanted or f.startswith(wanted + ":")]
            if match:
                return match[0]
        return left[0] if left else None

    def reply_one(self, ctx: SimContext) -> tuple[str, str | None]:
        """The utterance and the fact it reveals."""
        t = ctx.target
        if ctx.reply is None:
            if t.opening == "genre":
                fact = self.next_fact(ctx)
                return "Hi! " + self.say(t, fact), fact
            return "Hi! Can you recommend a movie for tonight?", None
        if ctx.reply.action == "ask":
            fact = self.next_fact(ctx, {"genre": "genre", "decade": "decade", "liked": "liked"}.get(ctx.reply.slot))
            return (self.say(t, fact), fact) if fact else ("I don't mind.", None)
        fact = self.next_fact(ctx)
        return ("No, none of those. " + self.say(t, fact), fact) if fact else ("No, something else please.", None)

    def utter(self, contexts: Sequence[SimContext]) -> list[str]:
        return [self.reply_one(c)[0] for c in contexts]

    def revealed(self, ctx: SimContext) -> str | None:
        return self.reply_one(ctx)[1]


LLM_SYSTEM = ("You are a person chatting with a movie recommender. {persona}You want to watch a {genres} film "
              "from the {decade}s. You liked the film {liked}. The film you want is {title}, but you must never "
              "say its title. Answer the recommender in one short sentence: say the genre or the decade you want.")


class LLMSimulator:
    """A user played by an instruction-tuned LM (SmolLM2-135M-Instruct offline): the system prompt
    :data:`LLM_SYSTEM` holds the persona and the hidden target (its title too, with the order never
    to say it: the leak detector checks it); the recommender's last ``history`` messages are the
    "user" turns of the chat and the simulator's own replies the "assistant" turns. ``prefill``
    starts every reply (e.g. ``"I'm looking for"``: a small model then speaks as the user instead
    of answering as a recommender). Greedy, ``max_new_tokens`` per reply, batched across
    dialogues; the first line, at most two sentences, is kept."""
    name = "LLM"

    def __init__(self, lm, max_new_tokens: int = 30, batch_size: int = 8, threads: int | None = 1, history: int = 1,
                 prefill: str = "", stop_at_blank_line: bool = True):
        self.lm, self.max_new_tokens, self.batch_size, self.threads = lm, int(max_new_tokens), int(batch_size), threads
        self.history, self.prefill, self.stop_at_blank_line = int(history), str(prefill), stop_at_blank_line
        self.memory: dict[int, list[tuple[str, str]]] = {}   # id(target) -> [(system text, own reply)]

    def system_prompt(self, t: Target) -> str:
        genres = " ".join(g.lower() for g in t.genres[:2])
        return LLM_SYSTEM.format(persona=(t.persona + " ") if t.persona else "", genres=genres, decade=t.decade,
                                 liked=t.liked_title or "none", title=t.title)

    def prompt(self, ctx: SimContext, past: Sequence[tuple[str, str]] = ()) -> str:
        """The chat prompt for one context (pure: ``past`` holds earlier (system, own reply) pairs)."""
        msgs = []
        for sys_text, own in list(past)[-self.history:] if self.history else []:
            msgs += [{"role": "user", "content": sys_text}, {"role": "assistant", "content": own}]
        first = "Hello! What would you like to watch?"
        msgs.append({"role": "user", "content": ctx.reply.text if ctx.reply is not None else first})
        return self.lm.chat(msgs, system=self.system_prompt(ctx.target)) + self.prefill

    @staticmethod
    def clean(text: str) -> str:
        """The first line and at most the first two sentences of a generated reply, quotes stripped."""
        line = next((ln for ln in str(text).splitlines() if ln.strip()), "").strip().strip('"“”')
        parts = re.split(r"(?<=[.!?])\s+", line)
        return " ".join(parts[:2]).strip()

    def utter(self, contexts: Sequence[SimContext]) -> list[str]:
        from .generator import generate
        keys = [(c.target.user, c.target.item) for c in contexts]
        prompts = [self.prompt(c, self.memory.get(k, [])) for c, k in zip(contexts, keys)]
        texts = [self.clean(self.prefill + t) for t in generate(self.lm, prompts, max_new_tokens=self.max_new_tokens,
                                                  batch_size=self.batch_size, threads=self.threads,
                                                  stop_at_blank_line=self.stop_at_blank_line)]
        for c, k, t in zip(contexts, keys, texts):
            sys_text = c.reply.text if c.reply is not None else "Hello! What would you like to watch?"
            self.memory.setdefault(k, []).append((sys_text, t))
        return texts

    def reset(self) -> None:
        self.memory.clear()


# ----------------------------------------------------------------------------- the leak detector

def _word_spans(text: str) -> list[tuple[str, int, int]]:
    return [(m.group().lower(), m.start(), m.end()) for m in re.finditer(r"[A-Za-z0-9]+", str(text))]


def find_title(text: str, title: str, threshold: float = 90.0) -> tuple[int, int] | None:
    """The character span of ``text`` that names ``title`` (rapidfuzz ``fuzz.ratio`` >= ``threshold``
    between a window of words and the title, with and without its leading article, case and
    punctuation ignored), or None. Titles shorter than 4 characters ("It") must appear with
    their capitalisation as a whole word."""
    from rapidfuzz import fuzz
    key = normalize_title(title)
    if not key or not str(text).strip():
        return None
    if len(key) < 4:
        m = re.search(r"\b" + re.escape(clean_title(title)) + r"\b", str(text))
        return (m.start(), m.end()) if m else None
    keys = {key, re.sub(r"^(the|a|an) ", "", key)}
    words = _word_spans(text)
    n_title = len(key.split())
    best, span = 0.0, None
    for n in sorted({max(1, n_title - 1), n_title, n_title + 1}, reverse=True):   # ties: the longer window
        if n > len(words):
            continue
        for s in range(0, len(words) - n + 1):
            window = " ".join(w for w, _, _ in words[s: s + n])
            if not window:
                continue
            score = max(fuzz.ratio(window, k) for k in keys)
            if score > best:
                best, span = score, (words[s][1], words[s + n - 1][2])
    return span if best >= threshold else None


def mentions_title(text: str, title: str, threshold: float = 90.0) -> bool:
    """True when ``text`` names ``title`` (:func:`find_title`): a simulator's title leak."""
    return find_title(text, title, threshold) is not None


def redact_title(text: str, title: str, threshold: float = 90.0, mask: str = "[that movie]") -> str:
    """``text`` with every mention of ``title`` replaced by ``mask``."""
    text = str(text)
    for _ in range(5):
        span = find_title(text, title, threshold)
        if span is None:
            break
        text = text[: span[0]] + mask + text[span[1]:]
    return text


def slot_agreement(slots: dict, target: Target) -> str:
    """Whether what a simulated message says fits its hidden target:

    ``"contradicts"``: a wanted genre the target does not have, a banned genre it has, or another
    decade; ``"agrees"``: at least one genre or decade of the target and no contradiction;
    ``"silent"``: no genre or decade at all (liked films and other words are not judged)."""
    genres, decade = set(target.genres), target.decade
    bad = (any(g not in genres for g in slots.get("genres", [])) or any(g in genres for g in slots.get("banned", []))
           or (slots.get("decade") is not None and slots["decade"] != decade))
    if bad:
        return "contradicts"
    if slots.get("genres") or slots.get("decade") is not None:
        return "agrees"
    return "silent"


# ============================================================================= 8. playing dialogues

@dataclass
class DialogueLog:
    """One simulated conversation: the target, its turns (user text, reply, leak, agreement), and the
    first turn whose list showed the target (None: not found within the turns played)."""
    target: Target
    turns: list = field(default_factory=list)
    found_at: int | None = None

    def transcript(self, corpus: Corpus | None = None) -> str:
        lines = [f"[target: {self.target.title}; genres {', '.join(self.target.genres)}; {self.target.decade}s; "
                 f"liked {self.target.liked_title}]"]
        for n, t in enumerate(self.turns, 1):
            lines.append(f"{n}. USER: {t['user']}" + ("  (title leak, redacted)" if t["leak"] else ""))
            lines.append("   SYSTEM [" + t["action"] + "]: " + t["system"].replace("\n", "\n     "))
        lines.append("FOUND at turn %d" % self.found_at if self.found_at else "NOT FOUND")
        return "\n".join(lines)


def run_dialogues(targets: Sequence[Target], simulator, make_conductor: Callable[[Target], Conductor], max_turns: int = 5,
                  progress: bool = False, desc: str = "dialogues") -> list[DialogueLog]:
    """Play one dialogue per target for up to ``max_turns`` user messages, all dialogues in step
    (so an LLM simulator generates each turn's replies in batches). ``make_conductor(target)``
    builds each dialogue's fresh conductor (the target is passed so that a per-user tool can be
    built; a conductor must not read the target otherwise).

    Each turn: the simulator speaks (the title leak check runs; a leaked title is redacted before
    the conductor reads it), the conductor replies; the dialogue stops once a reply's list holds the
    target (the simulated user accepts it) or the turns run out."""
    from tqdm.auto import tqdm
    logs = [DialogueLog(t) for t in targets]
    convs = [make_conductor(t) for t in targets]
    last: list[Reply | None] = [None] * len(targets)
    revealed: list[list[str]] = [[] for _ in targets]
    if hasattr(simulator, "reset"):
        simulator.reset()
    bar = tqdm(total=max_turns, desc=desc, disable=not progress, leave=False)
    for turn in range(1, max_turns + 1):
        active = [i for i, lg in enumerate(logs) if lg.found_at is None]
        if not active:
            break
        ctxs = [SimContext(targets[i], turn, last[i], tuple(revealed[i])) for i in active]
        said = simulator.utter(ctxs)
        for i, ctx, text in zip(active, ctxs, said):
            if hasattr(simulator, "revealed"):
                fact = simulator.revealed(ctx)
                if fact:
                    revealed[i].append(fact)
            title = targets[i].title
            leak = mentions_title(text, title)
            heard = redact_title(text, title) if leak else text
            reply = convs[i].respond(heard)
            last[i] = reply
            logs[i].turns.append({"user": heard, "raw": text, "leak": leak, "system": reply.text,
                                  "action": reply.action, "items": list(reply.items), "intent": reply.intent,
                                  "agreement": slot_agreement(reply.slots, targets[i])})
            if targets[i].item in reply.items:
                logs[i].found_at = turn
        bar.update(1)
    bar.close()
    return logs


def success_matrix(logs: Sequence[DialogueLog], max_turns: int = 5) -> np.ndarray:
    """``(len(logs), max_turns)`` 0/1: entry ``[d, t - 1]`` is 1 when dialogue ``d`` found its target
    within ``t`` turns (success@t)."""
    turns = np.arange(1, max_turns + 1)
    return np.asarray([[lg.found_at is not None and lg.found_at <= t for t in turns] for lg in logs], dtype=float)


def list_success(lists: Sequence[Sequence[int]], targets: Sequence[Target], k: int = 5, max_turns: int = 5,
                 ) -> np.ndarray:
    """success@t of a non-conversational system that shows the next ``k`` items of a fixed ranked
    list at each turn: 1 when the target is among the first ``k * t`` items."""
    out = np.zeros((len(targets), max_turns))
    for r, (lst, t) in enumerate(zip(lists, targets)):
        lst = [int(i) for i in lst]
        if t.item in lst:
            out[r, lst.index(t.item) // k:] = 1.0
    return out


def summarize(logs: Sequence[DialogueLog], max_turns: int = 5) -> dict:
    """The numbers of a batch of dialogues: success@t with 95% Wilson intervals, mean turns to
    success (among successes, with a bootstrap interval), title leaks, and the share of user
    messages that agree with / contradict / say nothing about the target."""
    from ..metrics import bootstrap_ci
    from ..text_metrics import wilson_ci
    m = success_matrix(logs, max_turns)
    n = len(logs)
    succ = {f"success@{t}": [round(float(m[:, t - 1].mean()), 4), *[round(x, 4) for x in wilson_ci(int(m[:, t - 1].sum()), n)]]
            for t in range(1, max_turns + 1)} if n else {}
    found = [lg.found_at for lg in logs if lg.found_at is not None]
    turns = [round(x, 3) for x in bootstrap_ci(np.asarray(found, dtype=float))] if len(found) > 1 else (
        [float(found[0])] * 3 if found else [float("nan")] * 3)
    msgs = [t for lg in logs for t in lg.turns]
    agree = {a: round(float(np.mean([t["agreement"] == a for t in msgs])), 4) if msgs else float("nan")
             for a in ("agrees", "contradicts", "silent")}
    return {"n": n, **succ, "mean_turns_to_success": turns, "messages": len(msgs),
            "title_leaks": int(sum(t["leak"] for t in msgs)), "agreement": agree}


# ============================================================================= 9. the chat widget

def chat_widget(conductor: Conductor):
    """An ipywidgets chat around one :class:`Conductor`: a text box, a Send button,
    a Reset button, the conversation log and the dialogue state. The Send button calls
    ``conductor.respond(text)``; without a frontend, call that directly."""
    import ipywidgets as W
    box = W.Text(placeholder="e.g. a funny movie from the 80s", layout=W.Layout(width="60%"))
    send, reset = W.Button(description="Send", button_style="primary"), W.Button(description="Reset")
    log, state = W.HTML(), W.HTML()

    def render():
        rows = []
        for user, reply in conductor.log:
            rows.append(f"<div><b>you:</b> {html.escape(user) or '<i>(empty)</i>'}</div>")
            rows.append("<div style='margin-left:1em;color:#234'><b>system:</b> "
                        + html.escape(reply.text).replace("\n", "<br>") + f" <i>[{reply.action}]</i></div>")
        log.value = "".join(rows) or "<i>Say what you would like to watch.</i>"
        items = "".join(f"<li>{k}: {html.escape(str(v))}</li>"
                        for k, v in conductor.state.summary(conductor.tools.corpus).items())
        state.value = f"<b>dialogue state</b><ul style='margin:0'>{items}</ul>"

    def on_send(_=None):
        conductor.respond(box.value)
        box.value = ""
        render()

    def on_reset(_=None):
        conductor.reset()
        render()

    send.on_click(on_send)
    reset.on_click(on_reset)
    render()
    return W.VBox([W.HBox([box, send, reset]), W.HBox([W.Box([log], layout=W.Layout(width="62%")),
                                                       W.Box([state], layout=W.Layout(width="38%"))])])
