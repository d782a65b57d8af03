r"""Evaluating what a generative recommender produces: text, judges and online tests.

Lists are scored by :mod:`course_lib.metrics` (P/R/NDCG@k). This module holds the rest of
notebook 17's toolkit, next to them:

* **n-gram overlap** with a reference text: :func:`bleu` / :func:`sentence_bleu` (sacrebleu)
  and :func:`rouge` (Google's rouge-score), with input checks; the two quantities behind
  them, written out for reading: :func:`ngram_precision` (BLEU's clipped precision) and
  :func:`rouge_l` (longest common subsequence);
* **perplexity** of a causal LM on texts (:func:`perplexity`), batched with left padding;
  the model is passed in (a :class:`course_lib.llm.models.LM`), torch is imported lazily;
* **A/B tests**: :func:`two_proportion_ztest` (click-through rates), :func:`diff_in_means_test`
  (Welch, for per-user numbers such as clicks per session), :func:`power_two_proportions`,
  :func:`sample_size_two_proportions`, and :func:`aa_peeking_false_positive_rate` (what
  looking at a running test every day does to the 5% error rate);
* **judge bias**, as pure functions of verdicts ("A"/"B") collected with the two answers
  in one order and then swapped: :func:`position_bias_rate`, :func:`slot_a_rate`,
  :func:`judge_accuracy`, :func:`judge_report` (every rate with a Wilson interval);
* a **click model** for simulated users: :func:`click_probability` (position-discounted
  examination of a ranked list).

.. math::

   \mathrm{PPL} = \exp\Big(-\frac{1}{N}\sum_{t=1}^{N}\log p(w_t \mid w_{<t})\Big)
   \qquad
   z = \frac{\hat p_B - \hat p_A}{\sqrt{\hat p(1-\hat p)\,(1/n_A + 1/n_B)}}
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats

# ----------------------------------------------------------------------------- input checks


def _texts(name: str, texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not one string (wrap it: [{texts[:30]!r}])")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__}, not a string")
    return out


def _pairs(candidates, references) -> tuple[list[str], list[str]]:
    cands, refs = _texts("candidates", candidates), _texts("references", references)
    if len(cands) != len(refs):
        raise ValueError(f"{len(cands)} candidates but {len(refs)} references: one reference per candidate")
    if not cands:
        raise ValueError("no texts to score")
    if any(not r.strip() for r in refs):
        raise ValueError("an empty reference cannot be matched: drop it before scoring")
    return cands, refs


_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words, the tokenization rouge-score uses (punctuation dropped)."""
    return _TOKEN.findall(text.lower())


# ----------------------------------------------------------------------------- n-gram overlap, by hand


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Counts of the ``n``-grams (tuples) of a token list."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return Counter(tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1))


def ngram_precision(candidate: Sequence[str], reference: Sequence[str], n: int = 1) -> float:
    """BLEU's clipped ("modified") n-gram precision of one candidate against one reference.

    Each candidate n-gram counts at most as often as it occurs in the reference, so "the the
    the" against "the cat" scores 1/3, not 1. 0.0 when the candidate has no n-gram."""
    cand, ref = ngrams(list(candidate), n), ngrams(list(reference), n)
    total = sum(cand.values())
    if total == 0:
        return 0.0
    return sum(min(c, ref[g]) for g, c in cand.items()) / total


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (in order, not necessarily contiguous)."""
    a, b = list(a), list(b)
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> tuple[float, float, float]:
    """ROUGE-L of token lists: (precision, recall, F1) with LCS / len(candidate), LCS / len(reference)."""
    cand, ref = list(candidate), list(reference)
    if not cand or not ref:
        return 0.0, 0.0, 0.0
    lcs = lcs_length(cand, ref)
    p, r = lcs / len(cand), lcs / len(ref)
    return p, r, (0.0 if lcs == 0 else 2 * p * r / (p + r))


# ----------------------------------------------------------------------------- the libraries


def bleu(candidates: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU in [0, 1] (sacrebleu's score / 100; one reference per candidate, its 13a tokenizer).

    Corpus BLEU pools the n-gram counts of all pairs before taking the geometric mean of the
    four precisions and the brevity penalty: it is *not* the mean of sentence BLEUs."""
    import sacrebleu
    cands, refs = _pairs(candidates, references)
    return float(sacrebleu.corpus_bleu(cands, [refs]).score) / 100.0


def sentence_bleu(candidates: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-pair BLEU in [0, 1] (sacrebleu's exponential smoothing and effective order, for short texts)."""
    import sacrebleu
    cands, refs = _pairs(candidates, references)
    return np.array([sacrebleu.sentence_bleu(c, [r]).score / 100.0 for c, r in zip(cands, refs)])


def rouge(candidates: Sequence[str], references: Sequence[str], types: Sequence[str] = ("rouge1", "rouge2", "rougeL"),
          stemmer: bool = False):
    """Per-pair ROUGE from rouge-score: a frame with ``<type>_p``, ``<type>_r``, ``<type>_f`` columns.

    ``types``: ``"rouge1"``, ``"rouge2"`` (n-gram overlap), ``"rougeL"`` (longest common subsequence)."""
    import pandas as pd
    from rouge_score import rouge_scorer
    cands, refs = _pairs(candidates, references)
    known = {"rouge1", "rouge2", "rouge3", "rouge4", "rougeL"}
    bad = [t for t in types if t not in known]
    if bad or not types:
        raise ValueError(f"unknown ROUGE types {bad}; choose among {sorted(known)}")
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=stemmer)
    rows = []
    for c, r in zip(cands, refs):
        s = scorer.score(r, c)  # rouge-score's order: (target, prediction)
        rows.append({f"{t}_{k}": getattr(s[t], name) for t in types
                     for k, name in (("p", "precision"), ("r", "recall"), ("f", "fmeasure"))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- perplexity


def default_prefix_id(tokenizer) -> int | None:
    """The token put before every text so that its first word is scored too: ``<|endoftext|>``
    (the document separator of GPT-style pre-training) when the vocabulary has it, else BOS."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    return tokenizer.bos_token_id


def token_nll(lm, texts: Sequence[str], batch_size: int = 4, max_length: int = 256,
              prefix_id: int | None = -1) -> tuple[np.ndarray, np.ndarray]:
    """Per text: the summed negative log-likelihood (nats) of its tokens and how many were scored.

    ``lm`` has ``.model``, ``.tokenizer`` and ``.device`` (a :class:`course_lib.llm.models.LM`).
    Texts are truncated to ``max_length`` tokens and batched with left padding; position IDs
    follow the attention mask, so a padded text scores exactly as it would alone.
    ``prefix_id``: -1 (the default) puts :func:`default_prefix_id` first; None scores from the
    second token on."""
    import torch
    from torch.nn import functional as F
    texts = _texts("texts", texts)
    tok, model = lm.tokenizer, lm.model
    if prefix_id == -1:
        prefix_id = default_prefix_id(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    nll, count = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            seqs = []
            for t in texts[s: s + batch_size]:
                ids = tok.encode(t, add_special_tokens=False)[:max_length]
                seqs.append(([prefix_id] if prefix_id is not None else []) + ids)
            width = max(max(map(len, seqs)), 1)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, q in enumerate(seqs):
                if q:
                    ids[r, width - len(q):] = torch.tensor(q)
                    mask[r, width - len(q):] = 1
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                           position_ids=pos.to(lm.device)).logits
            scored = mask[:, :-1].bool() & mask[:, 1:].bool()   # a real token predicted from a real one
            for r in range(len(seqs)):  # one row at a time: a (length, vocab) log-softmax, not (batch, length, vocab)
                lp = F.log_softmax(logits[r, :-1].float(), dim=-1).cpu().gather(1, ids[r, 1:, None]).squeeze(1)
                nll[s + r] = -float(lp[scored[r]].sum())
                count[s + r] = int(scored[r].sum())
            del logits
    return nll, count


def perplexity(lm, texts: Sequence[str], batch_size: int = 4, max_length: int = 256, prefix_id: int | None = -1) -> dict:
    """Perplexity of ``lm`` on ``texts``: ``{"ppl": corpus, "per_text": array, "tokens": int}``.

    The corpus value pools tokens, :math:`\\exp(\\sum \\text{NLL} / \\sum \\text{tokens})`; ``per_text``
    is each text's own perplexity (``nan`` for a text with no scored token)."""
    nll, count = token_nll(lm, texts, batch_size=batch_size, max_length=max_length, prefix_id=prefix_id)
    if count.sum() == 0:
        raise ValueError("no token to score: the texts are empty")
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(count > 0, np.exp(nll / np.maximum(count, 1)), np.nan)
    return {"ppl": float(np.exp(nll.sum() / count.sum())), "per_text": per, "tokens": int(count.sum())}


# ----------------------------------------------------------------------------- A/B tests


@dataclass
class TestResult:
    """A two-sample test: ``effect`` is B minus A, with a (1 - alpha) confidence interval."""
    effect: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return asdict(self)


def _count(name: str, value, allow_zero: bool = True) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} whole number, got {value!r}")
    return int(value)


def two_proportion_ztest(successes_a, n_a, successes_b, n_b, alpha: float = 0.05) -> TestResult:
    """Two-sided z-test of equal click-through rates, and a Wald interval for p_B - p_A.

    The test pools the two samples under H0 (one rate p): ``SE0 = sqrt(p(1-p)(1/n_A + 1/n_B))``;
    the interval uses each arm's own rate: ``SE = sqrt(p_A(1-p_A)/n_A + p_B(1-p_B)/n_B)``."""
    xa, xb = _count("successes_a", successes_a), _count("successes_b", successes_b)
    na, nb = _count("n_a", n_a, allow_zero=False), _count("n_b", n_b, allow_zero=False)
    if xa > na or xb > nb:
        raise ValueError("more successes than trials")
    pa, pb = xa / na, xb / nb
    pooled = (xa + xb) / (na + nb)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    z = 0.0 if se0 == 0 else (pb - pa) / se0
    p = float(2 * stats.norm.sf(abs(z)))
    se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    q = stats.norm.ppf(1 - alpha / 2)
    return TestResult(pb - pa, pb - pa - q * se, pb - pa + q * se, float(z), p, pa, pb, na, nb)


def diff_in_means_test(x_a, x_b, alpha: float = 0.05) -> TestResult:
    """Welch's t-test (unequal variances) of mean(B) - mean(A), with its (1 - alpha) interval."""
    a, b = np.asarray(x_a, dtype=float), np.asarray(x_b, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or len(a) < 2 or len(b) < 2:
        raise ValueError("each arm needs a 1-d array of at least two numbers")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the samples contain NaN or infinite values")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = b.mean() - a.mean(), math.sqrt(va + vb)
    if se == 0:
        return TestResult(float(diff), float(diff), float(diff), 0.0 if diff == 0 else math.copysign(math.inf, diff),
                          1.0 if diff == 0 else 0.0, float(a.mean()), float(b.mean()), len(a), len(b))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = diff / se
    q = stats.t.ppf(1 - alpha / 2, df)
    return TestResult(float(diff), float(diff - q * se), float(diff + q * se), float(t), float(2 * stats.t.sf(abs(t), df)),
                      float(a.mean()), float(b.mean()), len(a), len(b))


def _rates(p_a: float, p_b: float) -> None:
    if not (0 < p_a < 1 and 0 < p_b < 1):
        raise ValueError(f"rates must be in (0, 1), got {p_a} and {p_b}")


def power_two_proportions(p_a: float, p_b: float, n_per_arm: int, alpha: float = 0.05) -> float:
    """Probability that the two-sided z-test at level ``alpha`` detects rates ``p_a`` vs ``p_b``
    with ``n_per_arm`` users in each arm (normal approximation)."""
    _rates(p_a, p_b)
    n = _count("n_per_arm", n_per_arm, allow_zero=False)
    pbar = (p_a + p_b) / 2
    se0 = math.sqrt(2 * pbar * (1 - pbar) / n)
    se1 = math.sqrt((p_a * (1 - p_a) + p_b * (1 - p_b)) / n)
    q = stats.norm.ppf(1 - alpha / 2)
    d = abs(p_b - p_a)
    return float(stats.norm.cdf((d - q * se0) / se1) + stats.norm.cdf((-d - q * se0) / se1))


def sample_size_two_proportions(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users per arm for the two-sided z-test to detect ``p_a`` vs ``p_b`` with the given power."""
    _rates(p_a, p_b)
    if p_a == p_b:
        raise ValueError("equal rates: no sample size detects a zero difference")
    if not 0 < power < 1:
        raise ValueError("power must be in (0, 1)")
    pbar = (p_a + p_b) / 2
    qa, qb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    n = (qa * math.sqrt(2 * pbar * (1 - pbar)) + qb * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))) ** 2 / (p_a - p_b) ** 2
    return int(math.ceil(n))


def aa_peeking_false_positive_rate(rate: float, n_per_arm: int, looks: int, n_tests: int = 2000,
                                   alpha: float = 0.05, seed: int = 0) -> dict:
    """Simulate ``n_tests`` A/A tests (both arms click at ``rate``), each checked ``looks`` times at
    equal intervals. Returns the share declared significant at the final look only
    (``fpr_final``, about ``alpha``) and at *any* look (``fpr_peeking``: stopping the first time
    p < alpha), each with a Wilson interval, and the share by look count (``fpr_by_look``)."""
    if looks < 1 or n_per_arm < looks:
        raise ValueError("need 1 <= looks <= n_per_arm")
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, n_per_arm, looks + 1).round().astype(int)[1:]
    step = np.diff(np.concatenate([[0], edges]))
    ca = np.cumsum(rng.binomial(step[None, :], rate, size=(n_tests, looks)), axis=1)
    cb = np.cumsum(rng.binomial(step[None, :], rate, size=(n_tests, looks)), axis=1)
    n = edges[None, :].astype(float)
    pooled = (ca + cb) / (2 * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (cb - ca) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    sig = np.nan_to_num(np.abs(z), nan=0.0) > stats.norm.ppf(1 - alpha / 2)
    first = np.cumsum(sig, axis=1) > 0
    final, anyl = int(sig[:, -1].sum()), int(first[:, -1].sum())
    return {"fpr_final": final / n_tests, "fpr_final_ci": wilson_ci(final, n_tests),
            "fpr_peeking": anyl / n_tests, "fpr_peeking_ci": wilson_ci(anyl, n_tests),
            "fpr_by_look": first.mean(0), "looks_at": edges}


# ----------------------------------------------------------------------------- judge bias


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (well-behaved at 0, 1 and small n)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    q = stats.norm.ppf(1 - alpha / 2)
    p = k / n
    centre = (p + q * q / (2 * n)) / (1 + q * q / n)
    half = q * math.sqrt(p * (1 - p) / n + q * q / (4 * n * n)) / (1 + q * q / n)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def _verdicts(name: str, verdicts) -> np.ndarray:
    if isinstance(verdicts, str):
        raise TypeError(f"{name} must be a list of 'A'/'B' verdicts, not one string")
    v = np.array([str(x).strip().upper() for x in verdicts])
    bad = sorted(set(v.tolist()) - {"A", "B"})
    if bad:
        raise ValueError(f"{name} holds {bad}: every verdict must be 'A' or 'B'")
    return v


def _paired(original, swapped) -> tuple[np.ndarray, np.ndarray]:
    o, s = _verdicts("original", original), _verdicts("swapped", swapped)
    if len(o) != len(s):
        raise ValueError(f"{len(o)} original verdicts but {len(s)} swapped ones: one per pair")
    if len(o) == 0:
        raise ValueError("no verdicts")
    return o, s


def position_bias_rate(original, swapped) -> float:
    """Share of pairs whose verdict follows the slot, not the content.

    ``original[i]`` is the judge's verdict ("A" or "B") on pair i, ``swapped[i]`` its verdict
    with the two answers exchanged. A consistent judge names the other letter after the swap
    (it still prefers the same answer); the same letter twice means the *position* decided."""
    o, s = _paired(original, swapped)
    return float(np.mean(o == s))


def slot_a_rate(verdicts) -> float:
    """Share of verdicts that name the first slot, "A" (0.5 for a judge with no slot preference)."""
    v = _verdicts("verdicts", verdicts)
    if len(v) == 0:
        raise ValueError("no verdicts")
    return float(np.mean(v == "A"))


def judge_accuracy(original, swapped, truth) -> float:
    """Share of the 2N verdicts that pick the truly better answer.

    ``truth[i]`` is the slot ("A" or "B") of the better answer in the *original* order; after
    the swap it sits in the other slot."""
    o, s = _paired(original, swapped)
    t = _verdicts("truth", truth)
    if len(t) != len(o):
        raise ValueError("one truth per pair")
    flipped = np.where(t == "A", "B", "A")
    return float((np.sum(o == t) + np.sum(s == flipped)) / (2 * len(o)))


def judge_report(original, swapped, truth=None) -> dict:
    """Every judge-bias number with its 95% Wilson interval: position bias, slot-A rate,
    swap consistency and (given ``truth``) accuracy per verdict and on consistent pairs."""
    o, s = _paired(original, swapped)
    n = len(o)
    same = int(np.sum(o == s))
    n_a = int(np.sum(o == "A") + np.sum(s == "A"))
    out = {"pairs": n,
           "position_bias_rate": same / n, "position_bias_ci": wilson_ci(same, n),
           "swap_consistency": (n - same) / n, "swap_consistency_ci": wilson_ci(n - same, n),
           "slot_a_rate": n_a / (2 * n), "slot_a_ci": wilson_ci(n_a, 2 * n)}
    if truth is not None:
        t = _verdicts("truth", truth)
        if len(t) != n:
            raise ValueError("one truth per pair")
        right = int(np.sum(o == t) + np.sum(s == np.where(t == "A", "B", "A")))
        consistent_right = int(np.sum((o != s) & (o == t)))
        out.update({"accuracy": right / (2 * n), "accuracy_ci": wilson_ci(right, 2 * n),
                    "consistent_correct": consistent_right / n, "consistent_correct_ci": wilson_ci(consistent_right, n)})
    return out


# ----------------------------------------------------------------------------- a click model


def examination(k: int, decay: float = 1.0) -> np.ndarray:
    """P(a user looks at position p), p = 0..k-1: ``1 / (p + 1) ** decay`` (a common position-bias model)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    return 1.0 / (np.arange(k) + 1.0) ** decay


def click_probability(lists: np.ndarray, relevant: Sequence[set], attract: float = 0.9, noise: float = 0.02,
                      decay: float = 1.0) -> np.ndarray:
    """P(at least one click) on each ranked list under a position-based click model.

    Position p is examined with probability :func:`examination`; an examined relevant item is
    clicked with probability ``attract``, any other examined item with probability ``noise``."""
    lists = np.asarray(lists)
    if lists.ndim != 2 or len(lists) != len(relevant):
        raise ValueError("lists must be (users, k) with one relevant set per user")
    if not (0 <= noise <= attract <= 1):
        raise ValueError("need 0 <= noise <= attract <= 1")
    exam = examination(lists.shape[1], decay)
    rel = np.array([[int(i) in r for i in row] for row, r in zip(lists, relevant)], dtype=bool)
    p_click = exam[None, :] * np.where(rel, attract, noise)
    return 1.0 - np.prod(1.0 - p_click, axis=1)
