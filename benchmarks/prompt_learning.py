"""Prompt learning (Prompt4NR) with MiniLM on MovieLens-100k: all 12 templates and the 3 ensembles.

    python benchmarks/prompt_learning.py            # full run: 3 seeds x 12 templates (about an hour on 2 CPU cores)
    python benchmarks/prompt_learning.py --quick    # a smoke run: 1 seed, few users, a few steps per template

Protocol (the notebook's headline task, ``course_lib.llm.prompting``): per user one impression,
the clicked item and 4 items the user never rated. ``--setting cold`` (default): 20% of the
items are cold, never seen in training; training impressions are warm, validation and test
impressions are drawn among the cold items, so popularity ties at AUC 0.5 by construction.
Disjoint training / validation / test users. Every template fine-tunes its own MiniLM
(``--tuning full``) or only its soft tokens and transform (``--tuning prompt``); the three
ensembles average the four perspectives of one kind. Each seed redraws the users, the cold
items, the negatives and the initialisation. Reported per row: AUC, MRR, NDCG@5, NDCG@10 per
impression, the mean over seeds, a 95% bootstrap interval over the pooled test impressions of
all seeds, the per-seed AUCs and the training seconds per seed. Validation AUC is reported
too; nothing is tuned on test users.

Writes benchmarks/results/prompt_learning.json and prompt_learning.md
(``--quick``: prompt_learning_quick.json / .md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("auc", "mrr", "ndcg5", "ndcg10")


def row(per_seed: list[pd.DataFrame], valid_auc: list[float], train_s: list[float], seeds: list[int]) -> dict:
    """One table row from per-seed per-impression metrics."""
    from course_lib.metrics import bootstrap_ci
    pooled = pd.concat(per_seed, ignore_index=True)
    out = {}
    for m in METRICS:
        _, lo, hi = bootstrap_ci(pooled[m].to_numpy(), n_boot=2000)
        out[m] = round(float(np.mean([d[m].mean() for d in per_seed])), 4)
        out[f"{m}_ci"] = [round(lo, 4), round(hi, 4)]
    out["auc_per_seed"] = [round(float(d["auc"].mean()), 4) for d in per_seed]
    out["valid_auc"] = round(float(np.mean(valid_auc)), 4) if valid_auc else None
    out["seeds"] = seeds
    out["train_s"] = [round(s, 1) for s in train_s]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (quick: 0)")
    ap.add_argument("--setting", default="cold", choices=["cold", "warm_pop", "warm_uniform"])
    ap.add_argument("--tuning", default="full", choices=["full", "prompt"])
    ap.add_argument("--templates", nargs="+", default=None, help="template names (default: all 12)")
    ap.add_argument("--train-users", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from course_lib import data, get_device
    from course_lib.llm import encoder as E
    from course_lib.llm import prompting as P
    from course_lib.llm.models import load_encoder
    from course_lib.llm.verbalize import item_texts

    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    names = args.templates or list(P.TEMPLATES)
    n_train = args.train_users or (48 if args.quick else 600)
    n_valid, n_test = (16, 48) if args.quick else (100, 200)
    max_steps = 12 if args.quick else None
    device = get_device(args.device)
    ml = data.load_movielens("ml-100k")
    texts = item_texts(ml.items)
    vecs = pd.DataFrame(E.embed_texts(texts.tolist(), load_encoder(device=str(device)), progress=False), index=texts.index)

    per = {k: {"test": [], "valid": [], "train_s": []} for k in ["popularity", "frozen MiniLM cosine", *names]}
    ens_names = [f"{k} ensemble" for k in P.KINDS if sum(n.startswith(k + "-") for n in names) >= 2]
    per.update({k: {"test": [], "valid": [], "train_s": []} for k in ens_names})
    t_all = time.perf_counter()
    for seed in seeds:
        task = P.build_click_task(ml.interactions, ml.items, args.setting, n_train=n_train, n_valid=n_valid,
                                  n_test=n_test, seed=seed)
        print(task, flush=True)
        base = {"popularity": lambda f: P.popularity_scores(task, f),
                "frozen MiniLM cosine": lambda f: P.history_cosine(task, f, vecs)}
        for k, fn in base.items():
            for st in ("test", "valid"):
                per[k][st].append(P.impression_metrics(task.frame(st), fn(task.frame(st))))
            per[k]["train_s"].append(0.0)
        probs = {"test": {}, "valid": {}}
        for name in names:
            cfg = P.PromptConfig(tuning=args.tuning, epochs=args.epochs, max_steps=max_steps, seed=seed)
            sc = P.train_template(task, name, cfg, device=device, progress=False)
            for st in ("test", "valid"):
                probs[st][name] = P.score_task(sc, task, st)
                per[name][st].append(P.impression_metrics(task.frame(st), probs[st][name]))
            per[name]["train_s"].append(sc.train_s)
            print(f"seed {seed} {name}: test AUC {per[name]['test'][-1]['auc'].mean():.3f} "
                  f"({sc.train_s:.0f} s, {len(sc.losses)} steps)", flush=True)
            del sc
        for ens in ens_names:
            kind = ens.split()[0]
            for st in ("test", "valid"):
                per[ens][st].append(P.impression_metrics(task.frame(st), P.ensemble_by_kind(probs[st], kind)))
            per[ens]["train_s"].append(sum(per[n]["train_s"][-1] for n in names if n.startswith(kind + "-")))
    rows = {k: row(v["test"], [float(d["auc"].mean()) for d in v["valid"]], v["train_s"], seeds) for k, v in per.items()}
    result = {
        "quick": bool(args.quick),
        "protocol": (f"ml-100k click task, setting {args.setting}; 1 clicked + 4 never-rated items per user; "
                     f"{n_train} training, {n_valid} validation, {n_test} test users per seed; MiniLM-L6 as a "
                     f"masked LM, tuning {args.tuning}, {args.epochs} epoch(s)"
                     + (f", at most {max_steps} steps" if max_steps else "") + ", AdamW 3e-5 (encoder) / 1e-3 "
                     "(transform, soft tokens), batch 16"),
        "seeds": seeds, "threads": args.threads, "device": str(device),
        "total_s": round(time.perf_counter() - t_all, 1),
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (out / f"prompt_learning{suffix}.json").write_text(json.dumps(result, indent=1) + "\n")
    f = lambda r, m: f"{r[m]:.3f} [{r[m + '_ci'][0]:.3f}, {r[m + '_ci'][1]:.3f}]"  # noqa: E731
    title = "# Prompt learning (Prompt4NR) with MiniLM, ml-100k" + (" — QUICK smoke run, not the benchmark" if args.quick else "")
    md = [title, "", result["protocol"] + f"; seeds {seeds}; {args.threads} torch threads on {device}; "
          f"total {result['total_s']:.0f} s.", "",
          "Means over seeds; 95% bootstrap intervals over the pooled test impressions.", "",
          "| row | AUC | MRR | NDCG@5 | NDCG@10 | valid AUC | AUC per seed | train s per seed |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, r in rows.items():
        md.append(f"| {k} | {f(r, 'auc')} | {f(r, 'mrr')} | {f(r, 'ndcg5')} | {f(r, 'ndcg10')} | {r['valid_auc']:.3f} | "
                  f"{', '.join(f'{a:.3f}' for a in r['auc_per_seed'])} | {', '.join(f'{s:.0f}' for s in r['train_s'])} |")
    if args.quick:
        md += ["", f"Quick run: {n_train} training users and at most {max_steps} steps per template, so the trained rows "
               "are barely trained; it checks that the pipeline runs, not how well prompt learning works."]
    md.append("")
    (out / f"prompt_learning{suffix}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
