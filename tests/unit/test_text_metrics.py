"""course_lib.text_metrics and course_lib.llm.judge: hand-checked values, no text generation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib import text_metrics as T
from course_lib.llm import judge as J

from llm_fakes import tiny_lm as make_tiny_lm

pytestmark = pytest.mark.unit


# ----------------------------------------------------------------------------- tiny stand-ins

@pytest.fixture(scope="module")
def tiny_lm():
    return make_tiny_lm()


# ----------------------------------------------------------------------------- n-gram overlap

CAND, REF = "the cat sat on the mat", "the cat is on the mat"


def test_ngram_precision_is_clipped_by_hand():
    c, r = CAND.split(), REF.split()
    assert T.ngram_precision(c, r, 1) == pytest.approx(5 / 6)   # the, cat, on, the, mat
    assert T.ngram_precision(c, r, 2) == pytest.approx(3 / 5)   # the cat, on the, the mat
    assert T.ngram_precision(c, r, 3) == pytest.approx(1 / 4)   # on the mat
    assert T.ngram_precision("the the the".split(), "the cat".split(), 1) == pytest.approx(1 / 3)
    assert T.ngram_precision([], r, 1) == 0.0


def test_sentence_and_corpus_bleu_by_hand():
    # precisions 5/6, 3/5, 1/4, and 0/3 smoothed to 1/(2*3) (sacrebleu's "exp"); no brevity penalty
    want = (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert T.sentence_bleu([CAND], [REF])[0] == pytest.approx(want, abs=1e-6)
    assert T.bleu([CAND], [REF]) == pytest.approx(want, abs=1e-6)
    assert T.bleu([REF, REF], [REF, REF]) == pytest.approx(1.0)


def test_rouge_by_hand_and_lcs():
    df = T.rouge([CAND], [REF])
    assert df.loc[0, "rouge1_r"] == pytest.approx(5 / 6) and df.loc[0, "rouge1_p"] == pytest.approx(5 / 6)
    assert df.loc[0, "rougeL_r"] == pytest.approx(5 / 6)  # LCS: the cat on the mat
    # word order: ROUGE-1 is blind to it, ROUGE-L is not
    shuffled = T.rouge(["mat the on is cat the"], [REF])
    assert shuffled.loc[0, "rouge1_r"] == pytest.approx(1.0)
    assert shuffled.loc[0, "rougeL_r"] == pytest.approx(T.rouge_l("mat the on is cat the".split(), REF.split())[1])
    assert T.lcs_length("abcbdab", "bdcaba") == 4
    assert T.rouge_l([], ["a"]) == (0.0, 0.0, 0.0)
    p, r, f = T.rouge_l("a b c".split(), "a x c y".split())
    assert (p, r) == (pytest.approx(2 / 3), pytest.approx(2 / 4)) and f == pytest.approx(2 * p * r / (p + r))


def test_rouge_l_matches_rouge_score_on_random_token_lists():
    rng = np.random.default_rng(0)
    words = ["red", "dress", "fits", "small", "love", "it", "not", "great"]
    for _ in range(30):
        c = list(rng.choice(words, size=rng.integers(1, 9)))
        r = list(rng.choice(words, size=rng.integers(1, 9)))
        lib = T.rouge([" ".join(c)], [" ".join(r)], types=("rougeL",))
        assert T.rouge_l(c, r)[1] == pytest.approx(lib.loc[0, "rougeL_r"])


def test_text_metric_input_checks():
    with pytest.raises(ValueError, match="one reference per candidate"):
        T.bleu(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="not one string"):
        T.rouge("a b", "a b")
    with pytest.raises(ValueError, match="empty reference"):
        T.sentence_bleu(["a"], ["  "])
    with pytest.raises(ValueError, match="unknown ROUGE"):
        T.rouge(["a"], ["a"], types=("rougeX",))
    with pytest.raises(TypeError, match="not a string"):
        T.bleu([None], ["a"])
    assert T.tokenize("Love it!! Fits (size 4).") == ["love", "it", "fits", "size", "4"]


# ----------------------------------------------------------------------------- perplexity

def _hand_nll(model, ids):
    """Sum of -log p(token t | tokens < t) for t >= 1, one unpadded sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits[:-1].double(), -1)
    return -float(sum(logp[t - 1, ids[t]] for t in range(1, len(ids))))


def test_perplexity_matches_hand_computation_with_left_padding(tiny_lm):
    texts = ["a short one", "a considerably longer text to pad against", "xy", "z"]
    nll, count = T.token_nll(tiny_lm, texts, batch_size=4)   # all four in one left-padded batch
    for t, n, c in zip(texts, nll, count):
        ids = [1] + tiny_lm.tokenizer.encode(t)   # BOS first, so every character is scored
        assert c == len(t)
        assert n == pytest.approx(_hand_nll(tiny_lm.model, ids), rel=1e-4)
    res = T.perplexity(tiny_lm, texts, batch_size=3)
    assert res["tokens"] == sum(map(len, texts))
    assert res["ppl"] == pytest.approx(math.exp(nll.sum() / count.sum()), rel=1e-5)
    assert res["per_text"] == pytest.approx(np.exp(nll / count), rel=1e-5)
    # a random 128-token model is close to uniform: perplexity near the vocabulary size
    assert 60 < res["ppl"] < 250


def test_perplexity_without_prefix_and_empty_text(tiny_lm):
    nll, count = T.token_nll(tiny_lm, ["abc", ""], prefix_id=None)
    assert list(count) == [2, 0] and nll[1] == 0.0
    assert nll[0] == pytest.approx(_hand_nll(tiny_lm.model, tiny_lm.tokenizer.encode("abc")), rel=1e-4)
    assert np.isnan(T.perplexity(tiny_lm, ["abc", ""], prefix_id=None)["per_text"][1])
    with pytest.raises(ValueError, match="no token"):
        T.perplexity(tiny_lm, [""])


# ----------------------------------------------------------------------------- A/B tests

def test_two_proportion_ztest_by_hand_and_against_scipy():
    r = T.two_proportion_ztest(100, 1000, 130, 1000)
    pooled = 230 / 2000
    z = (0.13 - 0.10) / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert r.statistic == pytest.approx(z) and r.effect == pytest.approx(0.03)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(z))
    # the pooled z-test is the chi-square test of the 2x2 table without continuity correction
    chi2, p, _, _ = stats.chi2_contingency([[100, 900], [130, 870]], correction=False)
    assert r.statistic ** 2 == pytest.approx(chi2) and r.p_value == pytest.approx(p)
    se = math.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
    assert (r.ci_low, r.ci_high) == (pytest.approx(0.03 - 1.959964 * se, abs=1e-6), pytest.approx(0.03 + 1.959964 * se, abs=1e-6))
    assert T.two_proportion_ztest(5, 50, 5, 50).p_value == pytest.approx(1.0)
    assert T.two_proportion_ztest(0, 10, 0, 10).statistic == 0.0
    with pytest.raises(ValueError, match="more successes"):
        T.two_proportion_ztest(11, 10, 1, 10)
    with pytest.raises(ValueError, match="positive whole"):
        T.two_proportion_ztest(1, 0, 1, 10)


def test_diff_in_means_is_welch():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 40), rng.normal(0.5, 2, 70)
    r = T.diff_in_means_test(a, b)
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert r.statistic == pytest.approx(ref.statistic) and r.p_value == pytest.approx(ref.pvalue)
    assert r.ci_low < r.effect < r.ci_high and r.effect == pytest.approx(b.mean() - a.mean())
    with pytest.raises(ValueError, match="at least two"):
        T.diff_in_means_test([1.0], [1.0, 2.0])


def test_power_and_sample_size_agree_and_simulate():
    n = T.sample_size_two_proportions(0.10, 0.12, power=0.8)
    assert 3500 < n < 4200   # the textbook value for 10% vs 12% is about 3,840 per arm
    assert T.power_two_proportions(0.10, 0.12, n) == pytest.approx(0.8, abs=0.01)
    assert T.power_two_proportions(0.10, 0.12, 100) < 0.1
    rng = np.random.default_rng(0)
    xa, xb = rng.binomial(n, 0.10, 4000), rng.binomial(n, 0.12, 4000)
    sim = np.mean([T.two_proportion_ztest(a, n, b, n).p_value < 0.05 for a, b in zip(xa, xb)])
    assert sim == pytest.approx(0.8, abs=0.03)
    with pytest.raises(ValueError, match="equal rates"):
        T.sample_size_two_proportions(0.1, 0.1)


def test_peeking_inflates_the_aa_false_positive_rate():
    res = T.aa_peeking_false_positive_rate(0.1, 2000, looks=20, n_tests=2000, seed=3)
    assert 0.03 < res["fpr_final"] < 0.07
    assert res["fpr_peeking"] > 0.15   # about 0.25 for 20 looks
    assert np.all(np.diff(res["fpr_by_look"]) >= 0) and res["looks_at"][-1] == 2000
    one = T.aa_peeking_false_positive_rate(0.1, 2000, looks=1, n_tests=500, seed=3)
    assert one["fpr_final"] == one["fpr_peeking"]


# ----------------------------------------------------------------------------- judge bias

def test_position_bias_rate_by_hand():
    orig = ["A", "A", "B", "A", "B"]
    swap = ["A", "B", "B", "A", "A"]   # pairs 0, 2, 3 name the same slot twice
    assert T.position_bias_rate(orig, swap) == pytest.approx(3 / 5)
    assert T.slot_a_rate(orig + swap) == pytest.approx(6 / 10)
    truth = ["A", "A", "A", "B", "B"]  # better answer's slot in the original order
    # original right: pairs 0, 1 (A), 4 (B) = 3; swapped right (the other slot): pairs 1, 2 (B), 3, 4 (A) = 4
    assert T.judge_accuracy(orig, swap, truth) == pytest.approx(7 / 10)
    rep = T.judge_report(orig, swap, truth)
    assert rep["position_bias_rate"] == pytest.approx(0.6) and rep["swap_consistency"] == pytest.approx(0.4)
    assert rep["consistent_correct"] == pytest.approx(2 / 5)   # pairs 1 and 4
    lo, hi = rep["position_bias_ci"]
    assert lo < 0.6 < hi
    assert T.position_bias_rate(["a"], [" B "]) == 0.0   # letters are normalised


def test_judge_bias_input_checks_and_wilson():
    with pytest.raises(ValueError, match="'A' or 'B'"):
        T.position_bias_rate(["A", "C"], ["A", "B"])
    with pytest.raises(ValueError, match="one per pair"):
        T.position_bias_rate(["A"], ["A", "B"])
    with pytest.raises(TypeError, match="not one string"):
        T.slot_a_rate("AB")
    lo, hi = T.wilson_ci(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2
    lo, hi = T.wilson_ci(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def test_click_probability_by_hand():
    lists = np.array([[5, 6, 7], [1, 2, 3]])
    p = T.click_probability(lists, [{6}, set()], attract=0.8, noise=0.0, decay=1.0)
    assert p[0] == pytest.approx(0.8 * 1 / 2) and p[1] == 0.0
    p = T.click_probability(lists[:1], [{5, 7}], attract=1.0, noise=0.0)
    assert p[0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- the judge

def test_judge_message_and_prompt(tiny_lm):
    m = J.judge_message("I watched  Fargo.", "Heat", "Toy Story")
    assert m == ("I watched Fargo.\n\n" + J.QUESTION + "\n\nA: Heat\nB: Toy Story\n\nAnswer with one letter: A or B.")
    p = J.judge_prompt(tiny_lm, "ctx", "x", "y")
    assert p.startswith("<system>" + J.JUDGE_SYSTEM) and p.endswith("<assistant>") and "A: x\nB: y" in p
    with pytest.raises(ValueError, match="empty"):
        J.judge_message("ctx", "  ", "y")
    with pytest.raises(TypeError):
        J.judge_message("ctx", None, "y")


def test_judge_scores_from_next_token_and_swap(tiny_lm):
    ctx, x, y = ["I liked Heat.", "Comedies"], ["Fargo", "Big"], ["Casino", "Clue (1985)"]
    p = J.p_first(tiny_lm, ctx, x, y)
    assert p.shape == (2,) and np.all((p > 0) & (p < 1))
    # the same number by hand: softmax over the logits of "A" and "B" after the unpadded prompt
    a_id, b_id = J.verdict_token_ids(tiny_lm.tokenizer)
    ids = tiny_lm.tokenizer.encode(J.judge_prompt(tiny_lm, ctx[1], x[1], y[1]))
    with torch.no_grad():
        last = tiny_lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert p[1] == pytest.approx(float(torch.softmax(last[[a_id, b_id]], 0)[0]), abs=1e-5)
    res = J.judge_swapped(tiny_lm, ctx, x, y)
    assert res["p_a_original"] == pytest.approx(p)
    assert res["p_a_swapped"] == pytest.approx(J.p_first(tiny_lm, ctx, y, x))
    assert res["original"] == J.verdicts(p)
    assert res["p_first_wins"] == pytest.approx((p + 1 - res["p_a_swapped"]) / 2)
    with pytest.raises(ValueError, match="one of each"):
        J.p_first(tiny_lm, ctx, x, y[:1])


def test_pad_with_praise():
    assert J.pad_with_praise("Fargo", 0) == "Fargo"
    long = J.pad_with_praise("Fargo (1996)", 40)
    assert long.startswith("Fargo (1996) ") and len(long.split()) == 42


# ----------------------------------------------------------------------------- the review texts

def test_reviews_corrupt_cache_fails_clearly(tmp_path, monkeypatch):
    from course_lib import data
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    (tmp_path / "reviews").mkdir()
    (tmp_path / "reviews" / data.REVIEWS_FILE).write_bytes(b"not parquet")
    with pytest.raises(data.DataError, match="fetch reviews --force"):
        data.load_reviews()


def test_reviews_load_when_cached():
    from course_lib import data
    path = data.cache_dir() / "reviews" / data.REVIEWS_FILE
    if not path.exists():
        pytest.skip("reviews not fetched: python -m course_lib.data fetch reviews")
    r = data.load_reviews()
    assert len(r) == 22641 and set(r["rating"]) == {1, 2, 3, 4, 5}
    assert (r["text"].str.len() > 0).all() and r["review"].is_unique
