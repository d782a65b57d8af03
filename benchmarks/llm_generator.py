"""The LLM as generator on MovieLens-100k: grounding, accuracy vs popularity and SASRec,
constrained decoding, and the position bias of the LLM as a ranker.

    python benchmarks/llm_generator.py                 # default sizes (~20 min on 2 busy CPU cores)
    python benchmarks/llm_generator.py --quick         # a smoke run: a few users, short answers
    python benchmarks/llm_generator.py --users 200 --rank-users 100   # bigger (GPU or patience)

Protocol: leave-one-out by time, seen items excluded; the LLM is SmolLM2-135M-Instruct
(offline; ``--model`` for another), greedy decoding, one torch thread on a CPU.

* zero-shot top-10 for ``--users`` random test users (the last ``--history`` titles in the
  prompt); titles parsed, grounded to the catalog with rapidfuzz (ratio >= ``--threshold``) and
  audited (valid, hallucinated, repeat of the history, duplicate, new); the served list (new
  items in order) scored by HR@10 / NDCG@10 against popularity and SASRec (trained for
  ``--sasrec-epochs``) on the same users;
* constrained decoding through a catalog trie (history banned) for the same users;
* the LLM as a ranker: for ``--rank-users`` users, the target and SASRec's best other
  ``--candidates - 1`` items, shown in every cyclic order, scored by P(letter): the target's
  hit rate by slot, the pick rate by slot, top-1 accuracy of one order vs the average over the
  orders; then the LLM re-ranks SASRec's top ``--rerank`` by title likelihood (no target
  inserted): NDCG@10 vs SASRec, paired.

Means over users with 95% bootstrap intervals ([mean, low, high]). No prompt is tuned here:
the prompts are the notebook's (chosen there on validation users). Writes
benchmarks/results/llm_generator.json and llm_generator.md (after each part, so an
interrupted run keeps what it finished).
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




def write(out: Path, res: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "llm_generator.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    lines = ["# The LLM as generator (SmolLM2-135M-Instruct unless stated), MovieLens-100k", "",
             f"`python benchmarks/llm_generator.py {' '.join(res['argv'])}`; {res['setup']}", ""]
    z = res.get("zero_shot")
    if z:
        lines += [f"## Zero-shot top-10 ({z['users']} test users, {z['seconds_per_user']:.1f} s per user)", "",
                  "| share of generated titles | value |", "| --- | --- |"]
        lines += [f"| {k} | {z[k]:.3f} |" for k in ("valid_rate", "hallucination_rate", "repeat_rate",
                                                      "duplicate_rate", "new_rate", "empty_rate")]
        lines += ["", "| model (same users) | HR@10 | NDCG@10 |", "| --- | --- | --- |"]
        for name, key in [("LLM zero-shot", "llm"), ("Popularity", "popularity"), ("SASRec", "sasrec")]:
            lines.append(f"| {name} | {fmt(z[key]['hr10'])} | {fmt(z[key]['ndcg10'])} |")
        lines.append("")
    c = res.get("constrained")
    if c:
        lines += [f"## Constrained decoding (catalog trie, history banned; {c['seconds_per_user']:.1f} s per user)", "",
                  "| | free | constrained |", "| --- | --- | --- |"]
        for k in ("valid_rate", "repeat_rate", "duplicate_rate", "new_rate"):
            lines.append(f"| {k} | {z[k]:.3f} | {c[k]:.3f} |")
        lines += [f"| HR@10 | {fmt(z['llm']['hr10'])} | {fmt(c['hr10'])} |",
                  f"| NDCG@10 | {fmt(z['llm']['ndcg10'])} | {fmt(c['ndcg10'])} |", ""]
    p = res.get("position_bias")
    if p:
        m = len(p["hit_rate_by_slot"])
        lines += [f"## Position bias ({p['users']} users x {m} cyclic orders, target + {m - 1} SASRec candidates)", "",
                  "| slot | " + " | ".join("ABCDEFGHIJ"[:m]) + " |", "| --- |" + " --- |" * m,
                  "| hit rate (target in this slot) | " + " | ".join(f"{fmt(v)}" for v in p["hit_rate_by_slot"]) + " |",
                  "| pick rate (any answer) | " + " | ".join(f"{v:.3f}" for v in p["pick_rate_by_slot"]) + " |", "",
                  "| top-1 among the candidates | accuracy |", "| --- | --- |",
                  f"| chance | {1 / m:.3f} |", f"| LLM, one order | {fmt(p['top1_single'])} |",
                  f"| LLM, averaged over the {m} orders | {fmt(p['top1_aggregated'])} |",
                  f"| SASRec's own order | {fmt(p['sasrec_top1'])} |", ""]
    r = res.get("rerank")
    if r:
        lines += [f"## LLM re-ranking SASRec's top-{r['candidates']} by title likelihood ({r['users']} users, "
                  f"{r['seconds_per_user']:.1f} s per user; no target inserted)", "",
                  "| | NDCG@10 | AvgPop@10 |", "| --- | --- | --- |",
                  f"| SASRec | {fmt(r['sasrec_ndcg10'])} | {r['sasrec_avgpop10']:.0f} |",
                  f"| LLM re-ranked | {fmt(r['llm_ndcg10'])} | {r['llm_avgpop10']:.0f} |",
                  f"| paired difference | {fmt(r['diff_ndcg10'])} | |", ""]
    if res.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    (out / "llm_generator.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--users", type=int, default=60)
    ap.add_argument("--rank-users", type=int, default=40)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--rerank", type=int, default=20)
    ap.add_argument("--history", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=92.0)
    ap.add_argument("--sasrec-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: zero_shot,constrained,position,rerank")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.users, args.rank_users, args.max_new_tokens, args.sasrec_epochs, args.rerank = 3, 2, 20, 1, 5
    skip = set(filter(None, args.skip.split(",")))
    import torch
    from course_lib import data, metrics, prep, train
    from course_lib.llm import generator as G
    from course_lib.llm.models import load_lm
    from course_lib.models import Popularity, SASRec, SASRecConfig

    out = Path(args.out)
    t_start = time.perf_counter()
    ml = data.load_movielens("ml-100k")
    split = prep.leave_one_out(data.subsample(ml.interactions, 150, seed=args.seed) if args.quick else ml.interactions)
    tb = ml.items.set_index("item")["title"]
    titles = ["(padding)"] + [tb[r] for r in split.item_map.raw]
    rng = np.random.default_rng(args.seed)
    pool = rng.permutation(split.test["user"].to_numpy())
    hist = split.history("test")
    target = split.test.set_index("user")["item"]
    lm = load_lm(args.model)
    res = {"argv": list(argv if argv is not None else sys.argv[1:]),
           "setup": (f"{lm.name}, greedy, {args.threads} torch thread(s) for the LLM, history of {args.history} titles, "
                     f"grounding threshold {args.threshold:g}, SASRec {args.sasrec_epochs} epochs, seed {args.seed}, "
                     f"device {lm.device}"), "notes": []}
    torch.set_num_threads(max(torch.get_num_threads(), 2))
    sasrec = SASRec(split.n_items, SASRecConfig())
    train.train(sasrec, split, epochs=args.sasrec_epochs, device="cpu", progress=False, seed=args.seed)
    pop = Popularity().fit(split)

    users = np.sort(pool[: args.users])
    H = [hist[u] for u in users]
    y = target.loc[users].to_numpy()
    if "zero_shot" not in skip:
        t0 = time.perf_counter()
        g = G.LLMGenerator(lm, titles, k=10, max_items=args.history, max_new_tokens=args.max_new_tokens,
                           threshold=args.threshold, threads=args.threads).fit(split)
        lists = g.recommend(users, H, k=10)
        sec = (time.perf_counter() - t0) / len(users)
        rates = G.grounding_rates([g.outputs_[int(u)]["stats"] for u in users])
        z = {"users": int(len(users)), "seconds_per_user": round(sec, 2),
             **{f"{k}_rate": round(float(rates[k]), 4) for k in ("valid", "repeat", "duplicate", "new", "empty")},
             "hallucination_rate": round(float(rates["hallucinated"]), 4), "titles": rates["titles"]}
        for key, l in [("llm", lists), ("popularity", pop.recommend(users, H, k=10)),
                       ("sasrec", sasrec.recommend(users, H, k=10))]:
            e = G.evaluate_lists(l, y, 10)
            z[key] = {"hr10": ci(e["HR@10"]), "ndcg10": ci(e["NDCG@10"])}
        z["examples"] = {str(int(u)): g.outputs_[int(u)]["text"][:400] for u in users[:3]}
        res["zero_shot"] = z
        write(out, res)
        print("zero-shot:", {k: v for k, v in z.items() if k != "examples"}, flush=True)

    if "constrained" not in skip:
        t0 = time.perf_counter()
        g = G.LLMGenerator(lm, titles, k=10, max_items=args.history, max_new_tokens=args.max_new_tokens,
                           threshold=args.threshold, threads=args.threads, constrained=True).fit(split)
        lists = g.recommend(users, H, k=10)
        rates = G.grounding_rates([g.outputs_[int(u)]["stats"] for u in users])
        e = G.evaluate_lists(lists, y, 10)
        res["constrained"] = {"users": int(len(users)),
                              "seconds_per_user": round((time.perf_counter() - t0) / len(users), 2),
                              **{f"{k}_rate": round(float(rates[k]), 4) for k in ("valid", "repeat", "duplicate", "new")},
                              "hr10": ci(e["HR@10"]), "ndcg10": ci(e["NDCG@10"]),
                              "examples": {str(int(u)): g.outputs_[int(u)]["text"][:400] for u in users[:3]}}
        write(out, res)
        print("constrained:", res["constrained"], flush=True)

    rank_users = np.sort(pool[: args.rank_users])
    HR = [hist[u] for u in rank_users]
    yr = target.loc[rank_users].to_numpy()
    if "position" not in skip:
        m = args.candidates
        orders = G.rotations(m)
        retrieved = sasrec.recommend(rank_users, HR, k=m + 1)
        prompts, cand_sets = [], []
        for h, t, r in zip(HR, yr, retrieved):
            cands = [int(t)] + [int(i) for i in r if i != t and i > 0][: m - 1]
            cand_sets.append(cands)
            user = G.describe_history([titles[i] for i in h], args.history)
            prompts += [G.chat_prompt(lm, G.candidate_prompt(user, [titles[cands[j]] for j in o])) for o in orders]
        t0 = time.perf_counter()
        with G.torch_threads(args.threads):
            probs = G.letter_probs(lm, prompts, m).reshape(len(rank_users), m, m)
        tslot = np.tile(np.arange(m), len(rank_users))
        chosen = probs.reshape(-1, m).argmax(1)
        hits = chosen == tslot
        agg = np.stack([G.aggregate(G.to_candidate_order(p, orders)) for p in probs])
        sas = sasrec.score(rank_users, HR)
        res["position_bias"] = {
            "users": int(len(rank_users)), "seconds_per_prompt": round((time.perf_counter() - t0) / len(prompts), 3),
            "hit_rate_by_slot": [ci(hits[tslot == s]) for s in range(m)],
            "pick_rate_by_slot": [round(float(v), 4) for v in G.pick_rate_by_slot(chosen, m)],
            "top1_single": ci(hits), "top1_aggregated": ci(agg.argmax(1) == 0),
            "sasrec_top1": ci([np.argmax(s[c]) == 0 for s, c in zip(sas, cand_sets)]), "chance": round(1 / m, 4)}
        write(out, res)
        print("position bias:", res["position_bias"], flush=True)

    if "rerank" not in skip:
        t0 = time.perf_counter()
        ranker = G.LLMRanker(lm, titles, sasrec, n_candidates=args.rerank, method="likelihood", max_items=args.history,
                             threads=args.threads).fit(split)
        rk = ranker.recommend(rank_users, HR, k=10)
        sec = (time.perf_counter() - t0) / len(rank_users)
        base = sasrec.recommend(rank_users, HR, k=10)
        a, b = G.evaluate_lists(rk, yr, 10)["NDCG@10"], G.evaluate_lists(base, yr, 10)["NDCG@10"]
        popularity = split.item_popularity()
        res["rerank"] = {"users": int(len(rank_users)), "candidates": args.rerank, "seconds_per_user": round(sec, 2),
                         "llm_ndcg10": ci(a), "sasrec_ndcg10": ci(b), "diff_ndcg10": ci(a - b),
                         "llm_avgpop10": round(metrics.average_popularity(rk, popularity), 1),
                         "sasrec_avgpop10": round(metrics.average_popularity(base, popularity), 1)}
        write(out, res)
        print("rerank:", res["rerank"], flush=True)

    res["total_seconds"] = round(time.perf_counter() - t_start, 1)
    res["notes"].append(f"total {res['total_seconds']:.0f} s on this machine (2 shared CPU cores; timings vary with load)")
    write(out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
