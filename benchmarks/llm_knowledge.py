"""Knowledge injection on MovieLens-100k: one LoRA adapter of SmolLM2-135M per knowledge source.

    python benchmarks/llm_knowledge.py            # full run (~20-30 min on 2 loaded CPU cores)
    python benchmarks/llm_knowledge.py --quick    # a smoke run

Protocol (notebook 14's, with more examples and test users): users split 70/15/15 at random;
a case per user hides the last liked movie (rating >= 4) among 9 popularity-sampled movies the
user never rated, the user described by the 5 liked titles before it. Every adapter (LoRA r=8 on
q/v, lr 1e-3, one epoch, effective batch 8) trains on the same "recommend one movie" examples of
training users; the text / kg / collab variants add one knowledge example per taught movie (its
<knowledge> block: catalog metadata sentence; catalog-KG facts, since the KG shipped with ml-100k
links the wrong films; co-like facts counted among training users only). Test users' candidates are
ranked by title likelihood. References on the same candidates: the untuned model, popularity,
BPR-MF (epochs chosen on validation users), random order. Also: the per-token log-likelihood gain
of taught facts vs held-out facts. Means over test users with 95% bootstrap intervals; differences
to the task-only adapter paired over users.

Writes benchmarks/results/llm_knowledge.json and llm_knowledge.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import ci, fmt  # noqa: E402

METRICS = {"p5": "P@5", "r5": "R@5", "ndcg5": "NDCG@5", "avgpop5": "AvgPop@5"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few users and examples (minutes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import torch
    from course_lib import data
    from course_lib.llm import knowledge as K
    from course_lib.llm.models import load_lm
    from course_lib.llm.tuning import LoraSettings
    from course_lib.models.bpr import BPRMF
    from course_lib.models.popularity import Popularity

    n_rec, n_know, n_held, n_valid, n_test = (4, 4, 4, 10, 8) if args.quick else (48, 48, 24, 60, 80)
    negatives, history, like = 9, 5, 4.0
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    ml = data.load_movielens("ml-100k")
    ratings, n_items = ml.interactions, int(ml.items["item"].max())
    titles = dict(zip(ml.items["item"], ml.items["title"]))
    train_u, valid_u, test_u = K.split_users(ratings["user"].unique(), 0.15, 0.15, seed=args.seed)
    split = K.training_split(ratings, train_u, n_items)
    pop = split.item_popularity().astype(float)
    rng = np.random.default_rng(args.seed)
    train_cases, _ = K.ranking_cases(ratings, rng.permutation(train_u)[:n_rec], pop, negatives, like,
                                     max_history=history, seed=args.seed)
    valid_cases, _ = K.ranking_cases(ratings, valid_u[:n_valid], pop, negatives, like, max_history=history,
                                     seed=args.seed + 1)
    test_cases, skipped = K.ranking_cases(ratings, rng.permutation(test_u)[:n_test], pop, negatives, like,
                                          max_history=history, seed=args.seed + 2)
    ct, cl_ = K.catalog_kg(ml.items)
    kb = K.KnowledgeBase(ml.items, K.kg_pairs(ct, cl_, seed=args.seed),
                         K.cooccurrence(split.train[split.train["rating"] >= like], n_items))
    eval_items = K.knowledge_items(valid_cases + test_cases, 10**6, seed=args.seed)
    taught, rest = eval_items[:n_know], eval_items[n_know:]

    lm = load_lm(threads=args.threads)
    title_list = K.title_list(ml.items)
    rec_pairs = K.rec_examples(lm, train_cases, titles, max_items=history)
    settings = LoraSettings(r=8, alpha=16, lr=1e-3, epochs=1, micro_batch=2, accumulation=4, seed=args.seed)
    rankings, runs, timing = {}, {}, {}
    t0 = time.perf_counter()
    rankings["zero-shot"] = K.zero_shot_rankings(lm, title_list, test_cases)
    timing["zero_shot_s"] = round(time.perf_counter() - t0, 1)
    for source in K.SOURCES:
        know, skip = K.knowledge_examples(lm, kb, source, taught)
        held, _ = K.knowledge_examples(lm, kb, source, [i for i in rest if source == "none" or kb.facts(source, i)][:n_held])
        runs[source] = K.run_source(lm, source, rec_pairs, know, title_list, test_cases, settings, skip, held)
        rankings[source] = runs[source].rankings
        print(f"{source}: {runs[source].tune}", flush=True)
    epochs = [1, 2] if args.quick else [10, 30]
    valid_ndcg = {e: round(float(K.evaluate_rankings(K.score_cases(BPRMF(epochs=e, seed=args.seed).fit(split), valid_cases),
                                               valid_cases, pop)["NDCG@5"].mean()), 4) for e in epochs}
    best = max(valid_ndcg, key=valid_ndcg.get)
    rankings["popularity"] = K.score_cases(Popularity().fit(split), test_cases)
    rankings["bpr_mf"] = K.score_cases(BPRMF(epochs=best, seed=args.seed).fit(split), test_cases)
    rankings["random"] = [np.random.default_rng(args.seed + i).permutation(c.candidates) for i, c in enumerate(test_cases)]
    per_user = {k: K.evaluate_rankings(v, test_cases, pop) for k, v in rankings.items()}

    def block(name):
        return {short: ci(per_user[name][col].to_numpy()) for short, col in METRICS.items()}

    base = per_user["none"]["NDCG@5"].to_numpy()
    res = {
        "protocol": {"seed": args.seed, "quick": args.quick, "model": lm.name, "train_users": len(train_u),
                     "rec_examples": len(rec_pairs), "taught_movies": int(len(taught)), "test_users": len(test_cases),
                     "test_users_skipped": skipped, "candidates": negatives + 1, "history": history,
                     "lora": {"r": settings.r, "lr": settings.lr, "epochs": settings.epochs,
                              "effective_batch": settings.micro_batch * settings.accumulation},
                     "kg": "catalog (genres; genres and year): the shipped ml-100k.link uses MovieLens-1M IDs",
                     "coverage_of_ranked_movies": {k: round(float(v), 3) for k, v in kb.coverage(eval_items).items()}},
        "knowledge": {s: {**block(s), "ndcg5_minus_task_only": ci(per_user[s]["NDCG@5"].to_numpy() - base)
                          if s != "none" else None,
                          "knowledge_examples": runs[s].n_knowledge, "skipped_movies": runs[s].skipped_items,
                          "train_s": round(runs[s].tune.seconds, 1), "steps": runs[s].tune.steps,
                          "peak_rss_mb": round(runs[s].tune.peak_rss_mb),
                          "fact_gain_taught": ci(runs[s].taught_after - runs[s].taught_before)
                          if len(runs[s].taught_after) else None,
                          "fact_gain_heldout": ci(runs[s].heldout_after - runs[s].heldout_before)
                          if len(runs[s].heldout_after) else None}
                      for s in K.SOURCES},
        "reference": {"zero-shot": block("zero-shot"), "popularity": block("popularity"),
                      "bpr_mf": {**block("bpr_mf"), "epochs": best, "validation_ndcg5": valid_ndcg},
                      "random": block("random")},
        "timing": timing,
    }
    res["seconds"] = round(time.perf_counter() - t_start, 1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "llm_knowledge" + ("_quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    p = res["protocol"]
    md = [f"# Knowledge injection (MovieLens-100k, {p['test_users']} test users, SmolLM2-135M-Instruct + LoRA)", "",
          f"`python benchmarks/llm_knowledge.py{' --quick' if args.quick else ''}` ({res['seconds']:.0f} s, "
          f"1 thread). Seed {p['seed']}; {p['rec_examples']} task examples from training users, facts about "
          f"{p['taught_movies']} movies per source, {p['candidates']} candidates per test user (the last like + "
          "popularity-sampled unrated movies). Mean [95% bootstrap CI] over test users.", "",
          "| ranker | P@5 | R@5 | NDCG@5 | AvgPop@5 | NDCG@5 minus task only (paired) |",
          "| --- | --- | --- | --- | --- | --- |"]
    for s in K.SOURCES:
        k = res["knowledge"][s]
        label = "LLM, task only" if s == "none" else f"LLM + {s}"
        diff = fmt(k["ndcg5_minus_task_only"]) if k["ndcg5_minus_task_only"] else ""
        md.append(f"| {label} | {fmt(k['p5'])} | {fmt(k['r5'])} | {fmt(k['ndcg5'])} | {fmt(k['avgpop5'])} | {diff} |")
    for name, v in res["reference"].items():
        md.append(f"| {name} | {fmt(v['p5'])} | {fmt(v['r5'])} | {fmt(v['ndcg5'])} | {fmt(v['avgpop5'])} | |")
    md += ["", "## Did the facts go in? (log-likelihood per token of the knowledge answers, after minus before)", "",
           "| source | examples (skipped movies) | taught facts | held-out facts | training |", "| --- | --- | --- | --- | --- |"]
    for s in K.SOURCES[1:]:
        k = res["knowledge"][s]
        md.append(f"| {s} | {k['knowledge_examples']} ({k['skipped_movies']}) | {fmt(k['fact_gain_taught'])} | "
                  f"{fmt(k['fact_gain_heldout']) if k['fact_gain_heldout'] else 'n/a'} | {k['steps']} steps, "
                  f"{k['train_s']:.0f} s, {k['peak_rss_mb']} MB |")
    md += ["", f"Coverage of the ranked movies: {p['coverage_of_ranked_movies']}. Knowledge graph: {p['kg']}. "
           f"BPR-MF epochs {res['reference']['bpr_mf']['epochs']} (validation NDCG@5 {valid_ndcg})."]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
