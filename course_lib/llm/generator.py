r"""The LLM as generator: it writes its recommendation as text, and we check what it wrote.

Reading order (notebook 12 follows it):

1. **prompts**: a user as a title history or as a natural-language profile; three tasks
   (a top-K list, a rating, an explanation); zero-shot, or few-shot with worked examples
   given as earlier chat turns (:func:`topk_prompt`, :func:`user_message`, :func:`messages`);
2. **generation**: batched greedy decoding with a cap on new tokens (:func:`generate`);
3. **parsing and grounding**: a generated answer becomes a list of titles
   (:func:`parse_list`), each title is matched to a catalog item with rapidfuzz above a
   threshold (:class:`TitleIndex`, :func:`ground`), and each list is audited: valid,
   hallucinated, a repeat of the history, a duplicate (:func:`grounding_stats`);
4. **constrained decoding**: a prefix trie of the catalog's titles restricts every step of
   ``generate`` to tokens that continue a catalog title (:class:`TitleTrie`,
   :func:`constrained_fn`): 0% invalid titles by construction;
5. **the LLM as ranker** of given candidates: the next-token probability of each candidate's
   letter (:func:`letter_probs`) or the likelihood of its title (:func:`title_loglik`);
   position bias measured as the target's hit rate by its slot (:func:`hit_rate_by_slot`),
   and the fix: score several orders and average (:func:`rotations`, :func:`aggregate`);
6. two recommenders behind the course's interface: :class:`LLMGenerator` (its grounded list
   scores highest, every other item ``-inf``) and :class:`LLMRanker` (re-ranks a retriever's
   top candidates, every other item ``-inf``), so the course's evaluator and tables serve them.

No test of the course waits on text generation: everything here except :func:`generate`
and the scorers is a small pure function.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..models.base import NO_ITEM, Recommender
from .verbalize import PLACEHOLDER_TITLES, clean_title

# ============================================================================= 1. prompts

SYSTEM = "You are a movie recommender. You answer briefly and exactly in the format asked for."
TASKS = ("topk", "rating", "explain")
LETTERS = "ABCDEFGHIJKLMNOPQRST"
THRESHOLD = 92.0
"""Default grounding threshold (rapidfuzz ratio, 0-100): a typo ("Shawshank Redemtion", 98) passes,
a sequel of a catalog film ("Toy Story 2" vs "Toy Story", 90) does not."""


def describe_history(titles: Sequence[str], max_items: int = 10) -> str:
    """The user as a title history: ``"I have watched these movies, oldest first:\n1. ...\n2. ..."``.

    Titles are cleaned (:func:`~course_lib.llm.verbalize.clean_title`); only the most
    recent ``max_items`` are kept, oldest first. An empty history raises a ValueError."""
    titles = [clean_title(t) for t in titles][-max_items:] if max_items else []
    if not titles:
        raise ValueError("the history is empty: a user needs at least one watched movie to be described")
    lines = [f"{i}. {t}" for i, t in enumerate(titles, 1)]
    return "I have watched these movies, oldest first:\n" + "\n".join(lines)


def describe_ratings(titles: Sequence[str], ratings: Sequence[float], max_items: int = 10) -> str:
    """The user as rated titles: ``"My ratings (1-5), oldest first:\n1. Toy Story: 4\n..."`` (last ``max_items``)."""
    if len(titles) != len(ratings):
        raise ValueError(f"{len(titles)} titles but {len(ratings)} ratings")
    pairs = list(zip(titles, ratings))[-max_items:] if max_items else []
    if not pairs:
        raise ValueError("the history is empty: a user needs at least one rating to be described")
    lines = [f"{i}. {clean_title(t)}: {float(r):g}" for i, (t, r) in enumerate(pairs, 1)]
    return "My ratings (1-5), oldest first:\n" + "\n".join(lines)


def describe_profile(profile: str) -> str:
    """The user as a natural-language profile (see :func:`~course_lib.llm.verbalize.user_profile`)."""
    if not profile or not profile.strip():
        raise ValueError("the profile is empty")
    return "About me: " + profile.strip()


def task_request(task: str = "topk", k: int = 10, candidate: str | None = None) -> str:
    """The question part of a prompt, for one of :data:`TASKS`."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "topk":
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return (f"Recommend {k} other movies I would like. Answer with a numbered list of {k} movie titles, "
                "one per line, and nothing else.")
    if candidate is None:
        raise ValueError(f"the {task!r} task needs a candidate movie")
    if task == "rating":
        return f"How would I rate the movie {clean_title(candidate)} from 1 to 5? Answer with one digit."
    return f"In two sentences, explain why I might like the movie {clean_title(candidate)}."


def user_message(user_text: str, task: str = "topk", k: int = 10, candidate: str | None = None) -> str:
    """One user turn: the description of the user, a blank line, then the request."""
    return f"{user_text}\n\n{task_request(task, k, candidate)}"


def topk_prompt(titles: Sequence[str], k: int = 10, max_items: int = 10) -> str:
    """The zero-shot top-K request for a title history (the text of the user turn).

    >>> print(topk_prompt(["Toy Story", "Usual Suspects, The"], k=3))
    I have watched these movies, oldest first:
    1. Toy Story
    2. The Usual Suspects
    <BLANKLINE>
    Recommend 3 other movies I would like. Answer with a numbered list of 3 movie titles, one per line, and nothing else.
    """
    return user_message(describe_history(titles, max_items), "topk", k)


def one_movie_prompt(user_text: str) -> str:
    """Ask for a single title: the prompt under which a ranker scores each candidate's likelihood."""
    return f"{user_text}\n\nRecommend one movie I would like. Answer with the title only."


def numbered(titles: Sequence[str]) -> str:
    """``"1. A\n2. B"``: the answer format the top-K prompt asks for."""
    return "\n".join(f"{i}. {clean_title(t)}" for i, t in enumerate(titles, 1))


def messages(user_turn: str, shots: Sequence[tuple[str, str]] = ()) -> list[dict]:
    """Chat messages: zero-shot (``shots`` empty) or few-shot, each shot an earlier
    ``(user turn, assistant answer)`` exchange that shows the model the task and the format."""
    out = []
    for question, answer in shots:
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return out + [{"role": "user", "content": user_turn}]


def make_shots(histories: Sequence[Sequence[str]], k: int = 5, max_items: int = 10) -> list[tuple[str, str]]:
    """Few-shot examples from other users' title histories: the last ``k`` titles of each
    become the answer, the ones before them the question (so no shot peeks at anyone's future)."""
    shots = []
    for h in histories:
        h = list(h)
        if len(h) <= k:
            raise ValueError(f"a shot history needs more than k={k} titles, got {len(h)}")
        shots.append((user_message(describe_history(h[:-k], max_items), "topk", k), numbered(h[-k:])))
    return shots


def chat_prompt(lm, turns: list[dict] | str, system: str | None = SYSTEM) -> str:
    """The chat-formatted prompt text for ``lm`` (ending where the assistant's answer starts)."""
    return lm.chat(turns, system=system)


# ============================================================================= 2. generation

@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch threads (restored afterwards). One thread is usually the
    fastest for token-by-token generation on a small shared CPU."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.no_grad()
def generate(lm, prompts: Sequence[str], max_new_tokens: int = 80, batch_size: int = 8, threads: int | None = 1,
             prefix_allowed_tokens_fn_factory: Callable | None = None, stop_at_blank_line: bool = True) -> list[str]:
    """Greedy continuations of chat-formatted ``prompts`` (left padded, batched), special tokens removed.

    ``max_new_tokens`` caps the answer (and the time); generation of a row also stops at the
    end-of-turn token, or (``stop_at_blank_line``) at a blank line, where small models start
    rambling after their list. ``prefix_allowed_tokens_fn_factory(prompt_width)`` builds a
    ``prefix_allowed_tokens_fn`` for a batch (constrained decoding, see :func:`constrained_fn`).
    """
    tok, model = lm.tokenizer, lm.model
    if tok.padding_side != "left":
        raise ValueError("batched generation needs tokenizer.padding_side == 'left'")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[str] = []
    with torch_threads(threads if lm.device.type == "cpu" else None):
        for s in range(0, len(prompts), batch_size):
            batch = tok(list(prompts[s: s + batch_size]), return_tensors="pt", padding=True,
                        add_special_tokens=False).to(lm.device)
            width = batch["input_ids"].shape[1]
            kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                          temperature=None, top_p=None, top_k=None)
            if stop_at_blank_line:
                kwargs.update(stop_strings=["\n\n"], tokenizer=tok)
            if prefix_allowed_tokens_fn_factory is not None:
                kwargs["prefix_allowed_tokens_fn"] = prefix_allowed_tokens_fn_factory(width)
            ids = model.generate(**batch, **kwargs)
            out += tok.batch_decode(ids[:, width:], skip_special_tokens=True)
    return out


# ============================================================================= 3. parsing and grounding

_BULLET = re.compile(r"^\s*(?:\(?\d{1,2}\s*[.):\]]|[-*•]|#\d+)\s*")


def _strip_title(line: str) -> str:
    t = line
    while _BULLET.match(t):                               # "1. 1. Title" happens too
        t = _BULLET.sub("", t, count=1)
    t = t.strip()
    t = re.sub(r"^\*\*(.+?)\*\*", r"\1", t)              # markdown bold around the title
    t = re.split(r"\s+[-–—]\s+", t, maxsplit=1)[0]      # "Title - because ..." keeps the title
    return t.strip().strip("\"'“”*_ ").rstrip(".,;:").strip()


def parse_list(text: str, max_items: int | None = None) -> list[str]:
    """Titles from a generated answer: one per line, numbering and bullets removed.

    When no line is numbered or bulleted and the answer is one line, it is split at ``;``
    (or at commas). Empty entries are dropped; order is kept; at most ``max_items``."""
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    listed = [ln for ln in lines if _BULLET.match(ln)]
    if listed:
        lines = listed
    elif len(lines) == 1:
        lines = re.split(r";|,\s+", lines[0])
    titles = [t for t in (_strip_title(ln) for ln in lines) if t]
    return titles[:max_items] if max_items is not None else titles


def normalize_title(title: str) -> str:
    """The matching key of a title: article restored, year and ``[item N]`` removed, lower case,
    ``&`` as "and", punctuation as spaces, spaces collapsed. ``"Usual Suspects, The (1995)"``
    and ``"the usual suspects"`` get the same key."""
    if title is None or (isinstance(title, float) and np.isnan(title)):
        return ""
    t = re.sub(r"\s*\[item \d+\]\s*$", "", str(title))
    t = re.sub(r"\s*\((?:19|20)\d\d\)\s*$", "", t.strip())
    if not t or t.lower() in PLACEHOLDER_TITLES:
        return ""                                        # nothing to match (never "an untitled movie")
    t = clean_title(t).lower().replace("&", " and ")
    t = re.sub(r"[^\w\s]", " ", t)
    return re.sub(r"\s+", " ", t).strip()


@dataclass
class TitleIndex:
    """Matching keys of a catalog: ``keys[j]`` is a normalized title of item ``items[j]``.

    An item may have two keys (``"Seven (Se7en)"`` also answers to ``"Seven"``); two items
    with the same title share a key, and the first one listed wins."""
    keys: list[str]
    items: np.ndarray
    titles: dict = field(default_factory=dict)   # item -> clean display title

    @classmethod
    def from_titles(cls, item_ids: Sequence[int], titles: Sequence[str]) -> "TitleIndex":
        keys, items, display = [], [], {}
        seen = set()
        for i, t in zip(item_ids, titles):
            display[int(i)] = clean_title(t)
            main = re.sub(r"\s*\([^()]*\)\s*$", "", clean_title(t))
            for key in dict.fromkeys([normalize_title(t), normalize_title(main)]):
                if key and key not in seen:
                    seen.add(key)
                    keys.append(key)
                    items.append(int(i))
        return cls(keys, np.asarray(items, dtype=np.int64), display)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class Match:
    """One generated title and the catalog item it grounds to (``NO_ITEM`` below the threshold)."""
    generated: str
    item: int
    score: float
    key: str


def ground(titles: Sequence[str], index: TitleIndex, threshold: float = THRESHOLD) -> list[Match]:
    """Match each generated title to its closest catalog key (rapidfuzz ``fuzz.ratio`` on
    :func:`normalize_title` keys, 0-100; ties: the first key). Below ``threshold`` the title
    counts as hallucinated: ``item == NO_ITEM``."""
    from rapidfuzz import fuzz, process
    out = []
    for t in titles:
        q = normalize_title(t)
        key, score, pos = process.extractOne(q, index.keys, scorer=fuzz.ratio) if q and len(index) else ("", 0.0, -1)
        item = int(index.items[pos]) if score >= threshold and pos >= 0 else NO_ITEM
        out.append(Match(t, item, float(score), key))
    return out


def ground_ids(titles: Sequence[str], index: TitleIndex, threshold: float = THRESHOLD) -> np.ndarray:
    """The item ID of each generated title (``NO_ITEM`` = -1 where nothing matches)."""
    return np.asarray([m.item for m in ground(titles, index, threshold)], dtype=np.int64)


def grounding_stats(ids: Sequence[int], history: Sequence[int]) -> dict:
    """Audit of one grounded list. Each generated title is exactly one of:

    * ``hallucinated``: no catalog item above the threshold (``NO_ITEM``);
    * ``repeat``: a catalog item the user has already watched;
    * ``duplicate``: an unwatched item already named earlier in the list;
    * ``new``: a valid, unwatched, first mention: a usable recommendation.

    Returns the counts, ``n`` (titles generated) and ``valid`` (= n - hallucinated)."""
    seen, earlier = set(int(i) for i in history), set()
    c = {"n": 0, "valid": 0, "hallucinated": 0, "repeat": 0, "duplicate": 0, "new": 0}
    for i in map(int, ids):
        c["n"] += 1
        if i == NO_ITEM or i <= 0:
            c["hallucinated"] += 1
            continue
        c["valid"] += 1
        if i in seen:
            c["repeat"] += 1
        elif i in earlier:
            c["duplicate"] += 1
        else:
            c["new"] += 1
        earlier.add(i)
    return c


def grounding_rates(stats: Sequence[dict]) -> dict:
    """Pooled rates over many lists: valid, hallucinated, repeat, duplicate, new (shares of all
    generated titles), plus ``empty`` (share of lists with no title at all) and ``titles``."""
    n = sum(s["n"] for s in stats)
    out = {k: (sum(s[k] for s in stats) / n if n else float("nan"))
           for k in ("valid", "hallucinated", "repeat", "duplicate", "new")}
    out["empty"] = float(np.mean([s["n"] == 0 for s in stats])) if stats else float("nan")
    out["titles"] = int(n)
    return out


def served_list(ids: Sequence[int], history: Sequence[int], k: int = 10) -> np.ndarray:
    """What a system would serve from a grounded list: valid, unwatched, first mentions, in
    order, cut to ``k`` and padded with ``NO_ITEM`` (the course's ``recommend`` convention)."""
    seen, out = set(int(i) for i in history), []
    for i in map(int, ids):
        if i > 0 and i not in seen and i not in out:
            out.append(i)
    out = out[:k]
    return np.asarray(out + [NO_ITEM] * (k - len(out)), dtype=np.int64)


# ============================================================================= 4. constrained decoding

class TitleTrie:
    """A prefix tree of token sequences, one per catalog title followed by a separator token.

    Each node maps a token to its child and knows the items below it, so a user's watched
    items (or those already generated) can be banned without building a new trie."""

    def __init__(self, sequences: Sequence[Sequence[int]], items: Sequence[int]):
        self.root: dict = {"next": {}, "items": set()}
        for seq, item in zip(sequences, items):
            if not len(seq):
                raise ValueError(f"item {item} has an empty token sequence")
            node = self.root
            node["items"].add(int(item))
            for t in seq:
                node = node["next"].setdefault(int(t), {"next": {}, "items": set()})
                node["items"].add(int(item))

    def node(self, prefix: Sequence[int]) -> dict | None:
        """The node reached by ``prefix`` (None when no title starts that way)."""
        node = self.root
        for t in prefix:
            node = node["next"].get(int(t))
            if node is None:
                return None
        return node

    def allowed(self, prefix: Sequence[int], banned: set | frozenset = frozenset()) -> list[int]:
        """Tokens that continue ``prefix`` towards at least one title whose item is not ``banned``."""
        node = self.node(prefix)
        if node is None:
            return []
        return [t for t, child in node["next"].items() if not child["items"] <= banned]

    def paths(self) -> list[tuple[list[int], set]]:
        """Every complete path (root to leaf) with its items: what the trie can emit."""
        out, stack = [], [([], self.root)]
        while stack:
            prefix, node = stack.pop()
            if not node["next"]:
                out.append((prefix, node["items"]))
            for t, child in node["next"].items():
                stack.append((prefix + [t], child))
        return out


def catalog_trie(tokenizer, item_ids: Sequence[int], titles: Sequence[str], sep: str = "\n",
                 lead: str = " ") -> tuple[TitleTrie, int]:
    """The trie of ``lead + clean_title(title) + sep`` token sequences, and the separator's token ID.

    ``lead=" "`` because a title follows its number (``"1." + " Toy Story" + "\n"``) and
    byte-level BPE tokenizers spell a word differently with and without a space before it."""
    sep_ids = tokenizer.encode(sep, add_special_tokens=False)
    if len(sep_ids) != 1:
        raise ValueError(f"the separator {sep!r} must be one token, got {sep_ids}")
    seqs = [tokenizer.encode(lead + clean_title(t), add_special_tokens=False) + sep_ids for t in titles]
    return TitleTrie(seqs, item_ids), sep_ids[0]


def numbering(tokenizer, k: int) -> list[list[int]]:
    """Token IDs of ``"1."``, ``"2."``, ... ``"k."``: the forced start of each line of a constrained list."""
    return [tokenizer.encode(f"{n}.", add_special_tokens=False) for n in range(1, k + 1)]


def constrained_fn(trie: TitleTrie, sep_id: int, eos_id: int, k: int, banned: Sequence[set] | None = None,
                   numbers: Sequence[Sequence[int]] | None = None):
    """A factory for ``generate(prefix_allowed_tokens_fn=...)``: line ``n`` is the forced number
    ``numbers[n - 1]`` (if given) followed by a catalog title and ``sep_id``; after ``k`` lines
    only ``eos_id``.

    ``banned[b]``: items row ``b`` may not produce (its history); titles already generated in
    the row are banned too, so the list has no repeats and no duplicates by construction."""
    def factory(prompt_width: int):
        def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            gen = input_ids[prompt_width:].tolist()
            if eos_id in gen:
                return [eos_id]
            ends = [i for i, t in enumerate(gen) if t == sep_id]
            if len(ends) >= k:
                return [eos_id]
            ban = set(banned[batch_id]) if banned is not None else set()
            start = 0
            for n, end in enumerate(ends):          # items already generated in this row
                skip = len(numbers[n]) if numbers else 0
                node = trie.node(gen[start + skip: end + 1])
                if node is not None:
                    ban |= node["items"]
                start = end + 1
            line = gen[start:]
            num = list(numbers[len(ends)]) if numbers else []
            if len(line) < len(num):
                return [num[len(line)]]
            toks = trie.allowed(line[len(num):], frozenset(ban))
            return toks or [eos_id]
        return allowed
    return factory


# ============================================================================= 5. the LLM as ranker

def candidate_prompt(user_text: str, candidates: Sequence[str]) -> str:
    """A multiple-choice user turn: the user, then candidates lettered A, B, ... and the question."""
    if not 2 <= len(candidates) <= len(LETTERS):
        raise ValueError(f"between 2 and {len(LETTERS)} candidates, got {len(candidates)}")
    opts = "\n".join(f"{LETTERS[j]}. {clean_title(c)}" for j, c in enumerate(candidates))
    return (f"{user_text}\n\nWhich of these movies would I most like to watch next?\n{opts}\n"
            "Answer with the letter only.")


def _keep_last_kwarg(model) -> dict:
    """``logits_to_keep=1`` (or 4.x's ``num_logits_to_keep``) where the model takes it: only the
    last position's logits are computed, not ``(batch, length, vocab)`` (hundreds of MB)."""
    import inspect
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


@torch.no_grad()
def next_token_logits(lm, prompts: Sequence[str], batch_size: int = 8) -> torch.Tensor:
    """``(len(prompts), vocab)`` next-token logits after each prompt, left padded, batched.

    The same numbers as :func:`~course_lib.llm.scoring.last_token_logits`, with the memory of
    one position per prompt instead of all of them."""
    tok, model = lm.tokenizer, lm.model
    if tok.padding_side != "left":
        raise ValueError("next-token scoring needs tokenizer.padding_side == 'left'")
    keep, out = _keep_last_kwarg(model), []
    for s in range(0, len(prompts), batch_size):
        batch = tok(list(prompts[s: s + batch_size]), return_tensors="pt", padding=True,
                    add_special_tokens=False).to(lm.device)
        out.append(model(**batch, **keep).logits[:, -1, :].float().cpu())
    return torch.cat(out)


def letter_probs(lm, prompts: Sequence[str], n: int, batch_size: int = 8) -> np.ndarray:
    """``(len(prompts), n)``: P(letter j | prompt) among the first ``n`` letters (next-token scoring)."""
    from .scoring import answer_token_ids, verbalizer_probs
    ids = answer_token_ids(lm.tokenizer, list(LETTERS[:n]))
    return verbalizer_probs(next_token_logits(lm, list(prompts), batch_size=batch_size), ids)


@torch.no_grad()
def title_loglik(lm, prompt: str, titles: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Mean log-probability per token of each title as the answer to ``prompt`` (length-normalised,
    so a long title is not penalised for its length).

    The prompt is run once and its key-value cache shared by all titles (the same numbers as
    :func:`~course_lib.llm.scoring.sequence_logprob` with ``mean=True``, many times faster)."""
    import copy
    import inspect
    tok, model = lm.tokenizer, lm.model
    p_ids = tok.encode(prompt, add_special_tokens=False)
    c_ids = [tok.encode(clean_title(t), add_special_tokens=False) for t in titles]
    if not p_ids or any(len(c) == 0 for c in c_ids):
        raise ValueError("an empty prompt or title has no likelihood")
    out = model(input_ids=torch.tensor([p_ids], device=lm.device), use_cache=True, **_keep_last_kwarg(model))
    past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    # transformers 5 names the argument ``cache``; 4.x (e.g. on Colab) ``past_key_values``
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    first = torch.log_softmax(out.logits[0, -1].float(), -1).cpu()       # P(first title token | prompt)
    scores = []
    for s in range(0, len(c_ids), batch_size):
        chunk = c_ids[s: s + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(chunk), len(p_ids) + width), dtype=torch.long)
        mask[:, : len(p_ids)] = 1
        for r, c in enumerate(chunk):                                        # right padding after the prompt
            ids[r, : len(c)] = torch.tensor(c)
            mask[r, len(p_ids): len(p_ids) + len(c)] = 1
        cache = copy.deepcopy(past)
        cache.batch_repeat_interleave(len(chunk))
        pos = torch.arange(len(p_ids), len(p_ids) + width)[None].expand(len(chunk), -1)
        logits = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), position_ids=pos.to(lm.device),
                       use_cache=True, **{cache_arg: cache}).logits.float().cpu()
        logp = torch.log_softmax(logits, -1)
        for r, c in enumerate(chunk):
            lp = [float(first[c[0]])] + [float(logp[r, j - 1, c[j]]) for j in range(1, len(c))]
            scores.append(float(np.mean(lp)))
    return np.asarray(scores)


def rating_probs(lm, prompts: Sequence[str], batch_size: int = 8) -> np.ndarray:
    """``(len(prompts), 5)``: P(answer digit = 1..5 | prompt), the next token after each prompt."""
    from .scoring import answer_token_ids, verbalizer_probs
    ids = answer_token_ids(lm.tokenizer, list("12345"))
    return verbalizer_probs(next_token_logits(lm, list(prompts), batch_size=batch_size), ids)


def expected_rating(probs: np.ndarray) -> np.ndarray:
    """The mean of the 1-5 distribution per row: a rating prediction that uses all five probabilities."""
    p = np.asarray(probs, dtype=float)
    return p @ np.arange(1, p.shape[1] + 1) / p.sum(1)


def rotations(m: int) -> np.ndarray:
    """``(m, m)`` cyclic orders: row ``r`` lists candidate indices so that candidate ``j`` sits in
    slot ``(j + r) % m``. Over the rows every candidate takes every slot exactly once."""
    return np.array([[(s - r) % m for s in range(m)] for r in range(m)], dtype=np.int64)


def random_orders(m: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """``(r, m)`` random permutations of ``m`` candidates."""
    return np.stack([rng.permutation(m) for _ in range(r)]) if r else np.zeros((0, m), dtype=np.int64)


def to_candidate_order(slot_scores: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Scores per slot (one row per order) mapped back to candidate indices: ``out[r, orders[r, s]] = slot_scores[r, s]``."""
    slot_scores, orders = np.asarray(slot_scores, dtype=float), np.asarray(orders)
    out = np.empty_like(slot_scores)
    np.put_along_axis(out, orders, slot_scores, axis=1)
    return out


def aggregate(candidate_scores: np.ndarray) -> np.ndarray:
    """The shuffle-and-aggregate fix: a candidate's score averaged over the orders it was shown in
    (rows: orders, columns: candidates). A slot preference then adds the same to every candidate."""
    return np.asarray(candidate_scores, dtype=float).mean(0)


def hit_rate_by_slot(target_slots: Sequence[int], chosen_slots: Sequence[int], n_slots: int) -> np.ndarray:
    """Position bias: for each slot ``s``, the share of trials with the target in slot ``s`` where
    the model chose the target (chose slot ``s``); ``nan`` for a slot with no trial."""
    t, c = np.asarray(target_slots, dtype=np.int64), np.asarray(chosen_slots, dtype=np.int64)
    if t.shape != c.shape:
        raise ValueError(f"{t.shape} target slots but {c.shape} chosen slots")
    out = np.full(n_slots, np.nan)
    for s in range(n_slots):
        trials = t == s
        if trials.any():
            out[s] = float((c[trials] == s).mean())
    return out


def pick_rate_by_slot(chosen_slots: Sequence[int], n_slots: int) -> np.ndarray:
    """How often each slot is chosen, whatever it holds (uniform = 1 / n_slots when there is no bias)."""
    c = np.asarray(chosen_slots, dtype=np.int64)
    return np.bincount(c, minlength=n_slots)[:n_slots] / max(len(c), 1)


# ============================================================================= 6. recommenders

def recommend_scored(scores, histories, k: int, exclude_seen: bool = True) -> np.ndarray:
    """Top-``k`` among the items with a finite score only (``-inf`` = not a candidate), seen items
    excluded; ``NO_ITEM`` fills the rest, as :class:`~course_lib.models.random.Restricted` does."""
    from ..models.base import seen_mask, topk_allowed
    s = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    excluded = ~torch.isfinite(s)
    if exclude_seen:
        excluded |= seen_mask(histories, s.shape[1])
    return topk_allowed(s, excluded, k)


def _titles_of(titles: Sequence[str], ids: Sequence[int]) -> list[str]:
    return [titles[int(i)] for i in ids if int(i) > 0]


class LLMGenerator(Recommender):
    """The LLM writes a top-K list; the grounded, served list (:func:`served_list`) scores
    ``k, k-1, ..., 1`` and every other item ``-inf``.

    ``titles[i]`` is the title of encoded item ``i`` (0: padding). ``prompt_fn(user, history)``
    returns the user turn (default: :func:`topk_prompt` of the last ``max_items`` titles);
    ``shots`` makes it few-shot. ``constrained=True`` decodes through the catalog trie with the
    history banned (a last title cut short by ``max_new_tokens`` is dropped, so every title kept is
    complete). The raw answers are kept in ``outputs_`` (user -> text, titles, ids, stats, served)."""

    name = "LLM (generated list)"

    def __init__(self, lm, titles: Sequence[str], k: int = 10, max_items: int = 10, shots=(),
                 prompt_fn: Callable | None = None, max_new_tokens: int = 100, batch_size: int = 8,
                 threshold: float = THRESHOLD, constrained: bool = False, threads: int | None = 1):
        self.lm, self.titles, self.k, self.max_items, self.shots = lm, list(titles), k, max_items, list(shots)
        self.prompt_fn, self.max_new_tokens, self.batch_size = prompt_fn, max_new_tokens, batch_size
        self.threshold, self.constrained, self.threads = threshold, constrained, threads
        self.n_items = len(self.titles) - 1
        self.index = TitleIndex.from_titles(range(1, len(self.titles)), self.titles[1:])
        self.outputs_: dict = {}
        self._trie = None
        groups: dict = {}
        for i, t in enumerate(self.titles[1:], 1):
            groups.setdefault(normalize_title(t), set()).add(i)
        self._same_title = {i: g for g in groups.values() if len(g) > 1 for i in g}

    def fit(self, split, **kwargs) -> "LLMGenerator":
        if split.n_items != self.n_items:
            raise ValueError(f"titles cover {self.n_items} items, the split has {split.n_items}")
        return self

    def prompts(self, users, histories) -> list[str]:
        out = []
        for u, h in zip(users, histories):
            turn = self.prompt_fn(int(u), h) if self.prompt_fn else topk_prompt(_titles_of(self.titles, h), self.k,
                                                                                  self.max_items)
            out.append(chat_prompt(self.lm, messages(turn, self.shots)))
        return out

    def generate_lists(self, users, histories) -> list[np.ndarray]:
        """Generate, parse and ground one list per user (stored in ``outputs_``)."""
        factory = None
        if self.constrained:
            if self._trie is None:
                self._trie = catalog_trie(self.lm.tokenizer, range(1, len(self.titles)), self.titles[1:])
            trie, sep = self._trie
            eos = self.lm.tokenizer.eos_token_id
            # a watched film is banned under every ID its title has (ml-100k lists some films twice)
            banned = [set().union(*(self._same_title.get(int(i), {int(i)}) for i in h)) for h in histories]
        texts, prompts = [], self.prompts(users, histories)
        for s in range(0, len(prompts), self.batch_size):
            if self.constrained:  # banned sets are indexed by the row within the batch
                factory = constrained_fn(trie, sep, eos, self.k, banned[s: s + self.batch_size],
                                         numbering(self.lm.tokenizer, self.k))
            texts += generate(self.lm, prompts[s: s + self.batch_size], self.max_new_tokens, self.batch_size,
                              self.threads, factory, stop_at_blank_line=not self.constrained)
        lists = []
        for u, h, text in zip(users, histories, texts):
            if self.constrained and not text.endswith("\n"):
                text = text[: text.rfind("\n") + 1]   # a title cut short by max_new_tokens is dropped
            titles = parse_list(text)
            ids = ground_ids(titles, self.index, self.threshold)
            self.outputs_[int(u)] = {"text": text, "titles": titles, "ids": ids,
                                     "stats": grounding_stats(ids, h), "served": served_list(ids, h, self.k)}
            lists.append(self.outputs_[int(u)]["served"])
        return lists

    def score(self, users, histories):
        lists = self.generate_lists(users, histories)
        out = np.full((len(users), self.n_items + 1), -np.inf, dtype=np.float32)
        for r, lst in enumerate(lists):
            for p, i in enumerate(lst):
                if i > 0:
                    out[r, i] = float(self.k - p)
        return out

    def recommend(self, users, histories, k: int = 10, exclude_seen: bool = True) -> np.ndarray:
        """Top-``k`` of the items the LLM scored (fewer: ``NO_ITEM`` fills)."""
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        return recommend_scored(self.score(users, histories), histories, k, exclude_seen)


class LLMRanker(Recommender):
    """Re-ranks a retriever's top ``n_candidates`` with the LLM; every other item scores ``-inf``.

    ``method="likelihood"``: a candidate's score is the mean log-probability of its title as the
    answer to "recommend one movie" (no candidate list in the prompt, so no slot to be biased
    by); ``method="letter"``: the candidates are listed with letters and scored by P(letter),
    averaged over ``orders`` cyclic rotations (1 = a single order, position bias included)."""

    def __init__(self, lm, titles: Sequence[str], retriever: Recommender, n_candidates: int = 20,
                 method: str = "likelihood", orders: int = 1, max_items: int = 10, batch_size: int = 16,
                 threads: int | None = 1, fit_retriever: bool = False):
        if method not in ("likelihood", "letter"):
            raise ValueError("method must be 'likelihood' or 'letter'")
        if method == "letter" and not 2 <= n_candidates <= len(LETTERS):
            raise ValueError(f"letter scoring takes 2 to {len(LETTERS)} candidates")
        self.lm, self.titles, self.retriever = lm, list(titles), retriever
        self.n_candidates, self.method, self.orders, self.max_items = n_candidates, method, orders, max_items
        self.batch_size, self.threads, self.fit_retriever = batch_size, threads, fit_retriever
        self.n_items = len(self.titles) - 1
        self.name = f"LLM ranker ({method}) of {getattr(retriever, 'name', type(retriever).__name__)}"

    def fit(self, split, **kwargs) -> "LLMRanker":
        if self.fit_retriever:
            self.retriever.fit(split, **kwargs)
        return self

    def candidate_scores(self, history: Sequence[int], cands: Sequence[int]) -> np.ndarray:
        """The LLM's score of each candidate for one user (higher is better)."""
        user = describe_history(_titles_of(self.titles, history), self.max_items)
        names = _titles_of(self.titles, cands)
        if self.method == "likelihood":
            prompt = chat_prompt(self.lm, one_movie_prompt(user))
            return title_loglik(self.lm, prompt, names, self.batch_size)
        orders = rotations(len(cands))[: max(1, self.orders)]
        prompts = [chat_prompt(self.lm, candidate_prompt(user, [names[j] for j in o])) for o in orders]
        probs = letter_probs(self.lm, prompts, len(cands), self.batch_size)
        return aggregate(to_candidate_order(probs, orders))

    def score(self, users, histories):
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        cands = self.retriever.recommend(users, histories, self.n_candidates)
        out = np.full((len(users), self.n_items + 1), -np.inf, dtype=np.float32)
        with torch_threads(self.threads if self.lm.device.type == "cpu" else None):
            for r, (h, c) in enumerate(zip(histories, cands)):
                c = c[c > 0]
                if len(c) >= 2:
                    out[r, c] = self.candidate_scores(h, c)
                elif len(c) == 1:
                    out[r, c] = 0.0
        return out

    def recommend(self, users, histories, k: int = 10, exclude_seen: bool = True) -> np.ndarray:
        """Top-``k`` of the items the LLM scored (fewer: ``NO_ITEM`` fills)."""
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        return recommend_scored(self.score(users, histories), histories, k, exclude_seen)


def evaluate_lists(lists: Sequence[Sequence[int]], targets: Sequence[int], k: int = 10) -> dict:
    """Per-user HR@k and NDCG@k of served lists against one held-out item each (arrays)."""
    from ..metrics import hit_at_k, ndcg_at_k
    hr = np.array([hit_at_k(list(l), {int(t)}, k) for l, t in zip(lists, targets)])
    nd = np.array([ndcg_at_k(list(l), {int(t)}, k) for l, t in zip(lists, targets)])
    return {f"HR@{k}": hr, f"NDCG@{k}": nd}
