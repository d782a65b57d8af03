"""SmolLM2-135M as a pairwise judge: position bias, swap consistency, agreement with a ground truth.

    python benchmarks/llm_judge.py --pairs 90   # the recorded run (13 min on 2 loaded CPU cores)
    python benchmarks/llm_judge.py --quick      # a smoke run (a few pairs per task)

Every pair is judged twice, the second time with the two answers exchanged (the swap
protocol of course_lib.llm.judge); the verdict is next-token P("A") vs P("B"), no generation.
Three tasks, each with a known answer:

* ``movies``: a MovieLens-100k user (leave-one-out by time; the last 5 titles watched),
  the movie they watched next vs a movie they never rated drawn in proportion to its
  popularity (so "pick the famous one" does not win by itself); a popularity heuristic
  (pick the more-rated movie) is reported next to the judge;
* ``reviews``: "which review is more positive?", a 5-star clothing review vs a 1- or
  2-star one (first 40 words each): a task with a plain ground truth;
* ``verbosity``: the same movie plain vs padded with empty praise (no right answer; a
  judge with verbosity bias prefers the padded one in both orders).

Rates are over pairs (or verdicts) with 95% Wilson intervals; the order-averaged accuracy
(P_orig(A) + P_swap(B)) / 2 > 0.5 with a bootstrap interval.

Writes benchmarks/results/llm_judge.json and llm_judge.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rate(k: int, n: int) -> list[float]:
    from course_lib.text_metrics import wilson_ci
    lo, hi = wilson_ci(int(k), int(n))
    return [round(k / n, 4), round(lo, 4), round(hi, 4)]


def summarise(res: dict, truth_slot: str | None) -> dict:
    from course_lib.metrics import bootstrap_ci
    from course_lib.text_metrics import judge_report
    o, s = res["original"], res["swapped"]
    n = len(o)
    rep = judge_report(o, s, truth=None if truth_slot is None else [truth_slot] * n)
    out = {"pairs": n,
           "slot_a_rate": rate(round(rep["slot_a_rate"] * 2 * n), 2 * n),
           "position_bias_rate": rate(round(rep["position_bias_rate"] * n), n),
           "swap_consistency": rate(round(rep["swap_consistency"] * n), n),
           "mean_p_a_original": round(float(np.mean(res["p_a_original"])), 4),
           "mean_p_a_swapped": round(float(np.mean(res["p_a_swapped"])), 4)}
    if truth_slot is not None:
        out["accuracy_per_verdict"] = rate(round(rep["accuracy"] * 2 * n), 2 * n)
        out["consistent_and_correct"] = rate(round(rep["consistent_correct"] * n), n)
        m, lo, hi = bootstrap_ci((np.asarray(res["p_first_wins"]) > 0.5).astype(float), n_boot=2000)
        out["order_averaged_accuracy"] = [round(m, 4), round(lo, 4), round(hi, 4)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few pairs per task (smoke run)")
    ap.add_argument("--pairs", type=int, default=120, help="movie pairs (reviews: 2/3 of it, verbosity: 1/3)")
    ap.add_argument("--model", default=None, help="None: SmolLM2-135M-Instruct offline; a hub name when online")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from course_lib import data, prep
    from course_lib import llm
    from course_lib.llm import judge
    from course_lib.llm.models import load_lm
    torch.set_num_threads(1)
    n_movies = 6 if args.quick else args.pairs
    n_reviews, n_verbose = max(2, n_movies * 2 // 3), max(2, n_movies // 3)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    lm = load_lm(args.model, threads=1)

    # movies: the true next movie vs a popularity-sampled unseen one
    ml = data.load_movielens("ml-100k")
    split = prep.leave_one_out(ml.interactions)
    items = ml.items.set_index("item").loc[split.item_map.raw]
    text = ["(padding)"] + [llm.item_text(t, None if pd.isna(y) else int(y), g)
                            for t, y, g in zip(items["title"], items["year"], items["genres"])]
    pop = split.item_popularity().astype(float)
    hist = split.history("test")
    target = split.test.set_index("user")["item"]
    users = rng.choice(target.index.to_numpy(), size=n_movies, replace=False)
    ctx, true_a, other_b, heuristic_right = [], [], [], []
    for u in users:
        p = pop.copy()
        p[0] = 0
        p[list(set(hist[u].tolist()) | {int(target[u])})] = 0
        other = int(rng.choice(len(p), p=p / p.sum()))
        recent = "; ".join(llm.clean_title(items["title"].iloc[i - 1]) for i in hist[u][-5:])
        ctx.append(f"A user recently watched: {recent}.")
        true_a.append(text[int(target[u])])
        other_b.append(text[other])
        heuristic_right.append(float(pop[int(target[u])] > pop[other]) + 0.5 * float(pop[int(target[u])] == pop[other]))
    t = time.perf_counter()
    movies = judge.judge_swapped(lm, ctx, true_a, other_b)
    movie_s = time.perf_counter() - t
    result = {"model": lm.name, "protocol": __doc__.split("Writes")[0].strip(), "quick": args.quick}
    result["movies"] = summarise(movies, "A")
    result["movies"]["popularity_heuristic_accuracy"] = rate(sum(heuristic_right), len(heuristic_right))
    result["movies"]["seconds_per_verdict"] = round(movie_s / (2 * n_movies), 3)

    # reviews: which review is more positive (5 stars vs 1-2 stars)
    rv = data.load_reviews()
    pos = rv[rv["rating"] == 5].sample(n_reviews, random_state=args.seed)
    neg = rv[rv["rating"] <= 2].sample(n_reviews, random_state=args.seed)
    cut = lambda s: " ".join(s.split()[:40])  # noqa: E731
    rev = judge.judge_swapped(lm, ["Two customers reviewed a piece of clothing."] * n_reviews,
                              [cut(x) for x in pos["text"]], [cut(x) for x in neg["text"]],
                              question="Which review is more positive about the product?")
    result["reviews"] = summarise(rev, "A")

    # verbosity: padded vs plain, the same movie
    plain = true_a[:n_verbose]
    verb = judge.judge_swapped(lm, ctx[:n_verbose], [judge.pad_with_praise(a, 30) for a in plain], plain)
    o, s = np.asarray(verb["original"]), np.asarray(verb["swapped"])
    result["verbosity"] = summarise(verb, None)
    result["verbosity"]["padded_preferred_both_orders"] = rate(int(np.sum((o == "A") & (s == "B"))), n_verbose)
    result["verbosity"]["plain_preferred_both_orders"] = rate(int(np.sum((o == "B") & (s == "A"))), n_verbose)
    result["verbosity"]["order_averaged_p_padded"] = round(float(np.mean(verb["p_first_wins"])), 4)
    result["seconds"] = round(time.perf_counter() - t0, 1)

    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""

    def fmt(v):
        return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" if isinstance(v, list) else str(v)

    rows = ["slot_a_rate", "position_bias_rate", "swap_consistency", "accuracy_per_verdict", "consistent_and_correct",
            "order_averaged_accuracy", "popularity_heuristic_accuracy", "padded_preferred_both_orders",
            "plain_preferred_both_orders", "order_averaged_p_padded"]
    cmd = "python benchmarks/llm_judge.py" + (" --quick" if args.quick else f" --pairs {args.pairs}")
    result["command"] = cmd
    md = [f"# LLM-as-a-judge: {lm.name}", "", f"Generated by `{cmd}` in {result['seconds']:.0f} s (1 CPU thread).", "",
          "Each pair judged in both orders; next-token P(A) vs P(B). Rates with 95% intervals.", "",
          "| measure | movies (true next vs popular unseen) | reviews (5 stars vs 1-2 stars) | verbosity (padded vs plain) |",
          "| --- | --- | --- | --- |",
          f"| pairs | {result['movies']['pairs']} | {result['reviews']['pairs']} | {result['verbosity']['pairs']} |"]
    for r in rows:
        cells = [fmt(result[t][r]) if r in result[t] else "" for t in ("movies", "reviews", "verbosity")]
        if any(cells):
            md.append(f"| {r.replace('_', ' ')} | " + " | ".join(cells) + " |")
    md += ["", "Slot A rate 0.5 and position bias 0 for an unbiased judge; accuracy 0.5 is chance. "
           "Position bias = share of pairs given the same letter in both orders. A 135M model shows position bias "
           "strongly; judging ability and verbosity bias need a bigger model (`--model` with a hub name, online).", ""]
    (out / f"llm_judge{suffix}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"llm_judge{suffix}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
