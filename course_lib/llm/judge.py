"""An LLM as a pairwise judge, and the swap protocol that exposes its position bias.

The judge reads a context (a user's history), a question and two answers in slots A and B,
and its verdict is read from the **next-token distribution**: P("A") against P("B") at the
position where the answer starts (no text is generated, so a verdict costs one forward
pass and is deterministic). Every pair is judged twice, the second time with the answers
exchanged (:func:`judge_swapped`): a judge that prefers the same *answer* names the other
letter; one that names the same *letter* twice followed the slot. The bias numbers are pure
functions of those verdicts, in :mod:`course_lib.text_metrics`.

    lm = load_lm()
    res = judge_swapped(lm, contexts, true_items, random_items)
    text_metrics.judge_report(res["original"], res["swapped"], truth=["A"] * len(contexts))

SmolLM2-135M says "A" almost whatever the answers are: position bias is what it shows. Judging
ability (agreement with a ground truth) and subtler biases (verbosity, self-preference) need a
bigger model, e.g. ``load_lm("Qwen/Qwen2.5-1.5B-Instruct")`` online.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

JUDGE_SYSTEM = "You are a fair and careful judge of movie recommendations. You answer with one letter."
QUESTION = "Which movie is the better recommendation for this user to watch next?"
LETTERS = ("A", "B")


def _clean(name: str, text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    text = " ".join(text.split())
    if not text:
        raise ValueError(f"{name} is empty: a judge cannot compare an empty answer")
    return text


def judge_message(context: str, answer_a: str, answer_b: str, question: str = QUESTION) -> str:
    """The user turn of a pairwise judgment: context, question, the two answers, the answer format."""
    context = _clean("context", context)
    a, b = _clean("answer_a", answer_a), _clean("answer_b", answer_b)
    return (f"{context}\n\n{_clean('question', question)}\n\nA: {a}\nB: {b}\n\n"
            "Answer with one letter: A or B.")


def judge_prompt(lm, context: str, answer_a: str, answer_b: str, question: str = QUESTION,
                 system: str | None = JUDGE_SYSTEM) -> str:
    """The full chat-formatted prompt, ending where the judge's answer (its letter) starts."""
    return lm.chat(judge_message(context, answer_a, answer_b, question), system=system)


def verdict_token_ids(tokenizer) -> list[int]:
    """Token IDs of "A" and "B" as the first token of the assistant's turn (no leading space)."""
    from .scoring import answer_token_ids
    return answer_token_ids(tokenizer, list(LETTERS), leading_space=False)


def p_first(lm, contexts: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str],
            question: str = QUESTION, batch_size: int = 8) -> np.ndarray:
    """P("A") among {"A", "B"} for each pair (answer ``answers_a[i]`` in slot A), one forward pass each."""
    from .generator import next_token_logits
    from .scoring import verbalizer_probs
    if not (len(contexts) == len(answers_a) == len(answers_b)):
        raise ValueError(f"{len(contexts)} contexts, {len(answers_a)} A answers, {len(answers_b)} B answers: "
                         "one of each per pair")
    if len(contexts) == 0:
        return np.zeros(0)
    prompts = [judge_prompt(lm, c, a, b, question) for c, a, b in zip(contexts, answers_a, answers_b)]
    probs = verbalizer_probs(next_token_logits(lm, prompts, batch_size=batch_size), verdict_token_ids(lm.tokenizer))
    return probs[:, 0]


def verdicts(p_a: Sequence[float]) -> list[str]:
    """"A" where P("A") >= 0.5, else "B"."""
    return ["A" if p >= 0.5 else "B" for p in np.asarray(p_a, dtype=float)]


def judge_swapped(lm, contexts: Sequence[str], first: Sequence[str], second: Sequence[str],
                  question: str = QUESTION, batch_size: int = 8) -> dict:
    """The swap protocol: each pair judged with ``first[i]`` in slot A, then in slot B.

    Returns ``p_a_original``, ``p_a_swapped`` (P("A") in each order), the verdicts
    ``original`` and ``swapped`` ("A"/"B"), and ``p_first_wins``: the order-averaged
    probability that ``first[i]`` is preferred, (P_orig(A) + P_swapped(B)) / 2, the
    position-debiased score."""
    p_o = p_first(lm, contexts, first, second, question, batch_size)
    p_s = p_first(lm, contexts, second, first, question, batch_size)
    return {"p_a_original": p_o, "p_a_swapped": p_s, "original": verdicts(p_o), "swapped": verdicts(p_s),
            "p_first_wins": (p_o + (1.0 - p_s)) / 2.0}


def pad_with_praise(answer: str, words: int = 30) -> str:
    """An answer lengthened with empty praise (the same facts, more words): the verbosity probe."""
    filler = ("This is a truly excellent, wonderful and highly acclaimed choice that many viewers love, "
              "a great pick that is well worth watching and that everyone seems to enjoy very much, "
              "a classic that is always a pleasure and never disappoints.").split()
    if words < 0:
        raise ValueError("words must be >= 0")
    return _clean("answer", answer) + ("" if words == 0 else " " + " ".join((filler * (words // len(filler) + 1))[:words]))
