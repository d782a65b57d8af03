"""The LLM as encoder on MovieLens-100k: item cold start, warm items, two-tower vs cross-encoder.

    python benchmarks/llm_encoders.py            # full run (~10 min on 2 CPU cores)
    python benchmarks/llm_encoders.py --quick    # a smoke run on 150 users

Protocol: leave-one-out by time, seen items excluded. 20% of the items are made cold
(every training and validation interaction with them removed); test users are split by
whether their held-out item is cold or warm. Cold: "which of the new items will the user
pick?", each model ranks the cold items only (random: 10 / #cold for HR@10). Warm: full
ranking over the whole catalog. ID models (Popularity, ItemKNN, BPR-MF) never saw a cold
item (their scores for them are ties or untrained vectors); text models (TextKNN on
MiniLM, a two-tower on frozen MiniLM features) read the item's text. Then a MiniLM cross-encoder re-ranks the two-tower's
top-50 for a sample of users: NDCG@10 and milliseconds per user, retrieve-only vs
retrieve + re-rank. Means over users with 95% bootstrap intervals.

Writes benchmarks/results/llm_encoders.json and llm_encoders.md.
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



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rerank-users", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ce-steps", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from course_lib import data, metrics, prep
    from course_lib.llm import encoder as E
    from course_lib.models import BPRMF, ItemKNN, Popularity
    from course_lib.models.random import RandomScores, Restricted

    ml = data.load_movielens("ml-100k")
    inter = data.subsample(ml.interactions, 150, seed=args.seed) if args.quick else ml.interactions
    split0 = prep.leave_one_out(inter)
    split, cold = prep.cold_item_split(split0, 0.2, seed=args.seed)
    cold_users, warm_users = prep.cold_test_users(split, cold)
    print(split, f"| test users: {len(cold_users)} cold targets, {len(warm_users)} warm")
    t0 = time.perf_counter()
    emb = E.item_embeddings(split, ml.items)
    embed_s = time.perf_counter() - t0
    models = {
        "Random": RandomScores(seed=args.seed),
        "Popularity": Popularity(),
        "ItemKNN": ItemKNN(),
        "BPR-MF": BPRMF(epochs=5 if args.quick else 40, device="cpu"),
        "TextKNN": E.TextKNN(emb),
        "TwoTower": E.TwoTower(emb, E.TwoTowerConfig(epochs=1 if args.quick else 5, seed=args.seed)),
    }
    rows, per_user = {}, {}
    for name, m in models.items():
        t = time.perf_counter()
        m.fit(split)
        fit_s = time.perf_counter() - t
        _, table = metrics.evaluate(m, split, ks=(10,), per_user=True)
        table = table.set_index("user")
        _, cold_table = metrics.evaluate(Restricted(m, cold), split, ks=(10,), per_user=True)
        cold_table = cold_table.set_index("user")
        per_user[name] = table
        rows[name] = {"fit_s": round(fit_s, 1),
                      "cold_hr10": ci(cold_table.loc[cold_users, "HR@10"]),
                      "cold_ndcg10": ci(cold_table.loc[cold_users, "NDCG@10"]),
                      "warm_hr10": ci(table.loc[warm_users, "HR@10"]), "warm_ndcg10": ci(table.loc[warm_users, "NDCG@10"])}
        print(f"{name:11s} fit {fit_s:6.1f}s  cold HR@10 {rows[name]['cold_hr10']}  warm NDCG@10 {rows[name]['warm_ndcg10']}",
              flush=True)
    id_models, text_models = ["Popularity", "ItemKNN", "BPR-MF"], ["TextKNN", "TwoTower"]
    best_id_cold = max(id_models, key=lambda n: rows[n]["cold_hr10"][0])
    best_text_cold = max(text_models, key=lambda n: rows[n]["cold_hr10"][0])
    best_id_warm = max(id_models, key=lambda n: rows[n]["warm_ndcg10"][0])
    best_text_warm = max(text_models, key=lambda n: rows[n]["warm_ndcg10"][0])

    # two-tower retrieve vs retrieve + cross-encoder re-rank, on a sample of test users
    tt = models["TwoTower"]
    rng = np.random.default_rng(args.seed)
    users_all = split.test["user"].to_numpy()
    sample = np.sort(rng.choice(users_all, size=min(args.rerank_users, len(users_all)), replace=False))
    texts = ["padding"] + E.item_texts(ml.items).loc[split.item_map.decode(np.arange(1, split.n_items + 1))].tolist()
    hist = split.history("test")
    targets = split.test.set_index("user").loc[sample, "item"].to_numpy()
    t = time.perf_counter()
    short = tt.recommend(sample, [hist[u] for u in sample], k=50)
    retrieve_ms = (time.perf_counter() - t) / len(sample) * 1000
    nd = lambda lists: [metrics.ndcg_at_k(list(l), {int(y)}, 10) for l, y in zip(lists, targets)]  # noqa: E731
    runs = {}
    ce_steps = 10 if args.quick else args.ce_steps
    for frozen in (True, False):  # frozen MiniLM (only the head learns) vs fine-tuned, same examples and steps
        ce = E.CrossEncoder(texts, tt, E.CrossEncoderConfig(steps=ce_steps,
                                                            freeze_encoder=frozen, seed=args.seed), candidates=50)
        ce.fit(split)
        t = time.perf_counter()
        reranked = ce.rerank([hist[u] for u in sample], short)
        runs[frozen] = (reranked, (time.perf_counter() - t) / len(sample) * 1000 + retrieve_ms, ce.train_s)
        del ce
    reranked, rerank_ms, ce_train_s = runs[False]
    nd_tt, nd_ce, nd_frozen = nd(short), nd(reranked), nd(runs[True][0])
    recall50 = float(np.mean([int(y) in set(l.tolist()) for l, y in zip(short, targets)]))
    result = {
        "protocol": "ml-100k, leave-one-out by time, full ranking, seen excluded; 20% of items cold (seed "
                    f"{args.seed}); {len(cold_users)} cold-target and {len(warm_users)} warm-target test users"
                    + (" (quick: 150 users)" if args.quick else ""),
        "embed_items_s": round(embed_s, 1),
        "models": rows,
        "cold_hr10_text": rows[best_text_cold]["cold_hr10"][0], "cold_hr10_text_ci": rows[best_text_cold]["cold_hr10"],
        "cold_hr10_text_model": best_text_cold, "cold_hr10_random_ci": rows["Random"]["cold_hr10"],
        "cold_hr10_id_best": rows[best_id_cold]["cold_hr10"][0], "cold_hr10_id_best_ci": rows[best_id_cold]["cold_hr10"],
        "cold_hr10_id_best_model": best_id_cold,
        "warm_ndcg10_text": rows[best_text_warm]["warm_ndcg10"][0], "warm_ndcg10_text_ci": rows[best_text_warm]["warm_ndcg10"],
        "warm_ndcg10_text_model": best_text_warm,
        "warm_ndcg10_id_best": rows[best_id_warm]["warm_ndcg10"][0], "warm_ndcg10_id_best_ci": rows[best_id_warm]["warm_ndcg10"],
        "warm_ndcg10_id_best_model": best_id_warm,
        "twotower_ndcg10": ci(nd_tt)[0], "twotower_ndcg10_ci": ci(nd_tt),
        "rerank_ndcg10": ci(nd_ce)[0], "rerank_ndcg10_ci": ci(nd_ce),
        "rerank_minus_twotower_ci": ci(np.asarray(nd_ce) - np.asarray(nd_tt)),
        "twotower_recall50": round(recall50, 4),
        "twotower_ms_per_user": round(retrieve_ms, 2), "rerank_ms_per_user": round(rerank_ms, 1),
        "rerank_frozen_ndcg10": ci(nd_frozen)[0], "rerank_frozen_ndcg10_ci": ci(nd_frozen),
        "rerank_frozen_ms_per_user": round(runs[True][1], 1),
        "rerank_users": int(len(sample)), "cross_encoder_train_s": round(ce_train_s, 1),
        "cross_encoder_frozen_train_s": round(runs[True][2], 1), "cross_encoder_steps": ce_steps,
        "threads": args.threads,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (out / f"llm_encoders{suffix}.json").write_text(json.dumps(result, indent=1))
    md = ["# LLM as encoder (ml-100k)", "", result["protocol"] + ". Cold columns: the cold items are the only "
          f"candidates ({len(cold)} items); warm columns: full ranking.", "",
          "| model | cold HR@10 | cold NDCG@10 | warm HR@10 | warm NDCG@10 | fit s |", "| --- | --- | --- | --- | --- | --- |"]
    f = fmt
    for name, r in rows.items():
        md.append(f"| {name} | {f(r['cold_hr10'])} | {f(r['cold_ndcg10'])} | {f(r['warm_hr10'])} | {f(r['warm_ndcg10'])} | {r['fit_s']} |")
    md += ["", f"Retrieve vs re-rank ({len(sample)} test users, two-tower top-50, recall@50 {recall50:.3f}):", "",
           "| pipeline | NDCG@10 | ms per user |", "| --- | --- | --- |",
           f"| two-tower retrieve | {f(result['twotower_ndcg10_ci'])} | {retrieve_ms:.2f} |",
           f"| + cross-encoder re-rank, frozen MiniLM | {f(result['rerank_frozen_ndcg10_ci'])} | {runs[True][1]:.1f} |",
           f"| + cross-encoder re-rank, fine-tuned MiniLM | {f(result['rerank_ndcg10_ci'])} | {rerank_ms:.1f} |", "",
           f"Re-rank minus retrieve (paired): {f(result['rerank_minus_twotower_ci'])}. "
           f"Cross-encoder training ({ce_steps} steps of 8 users x 4 candidates): fine-tuned "
           f"{result['cross_encoder_train_s']} s, frozen {result['cross_encoder_frozen_train_s']} s; item embeddings: {embed_s:.1f} s "
           f"(cached after the first run); {args.threads} torch threads.", ""]
    (out / f"llm_encoders{suffix}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
