"""Hyper-parameter search for the course's GRU4Rec and BERT4Rec on the **validation** split of ml-100k.

The test items are never read: every trial trains with :func:`course_lib.train.train`
(early stopping on validation NDCG@10) and is judged by its best validation NDCG@10.
Two stages, both recorded:

1. ``--trials`` configurations drawn at random (fixed ``--search-seed``) from the model's
   space below (the whole grid when it is that small), one training seed each;
2. the ``--top`` best of them trained again with ``--confirm-seeds`` more seeds, and the
   winner is the best **mean** validation NDCG@10 among those whose mean training time fits
   ``--max-seconds`` (the issue's budget: 5 minutes a seed on the course's 2-core CPU).

Writes ``benchmarks/results/sequential_search_<model>.csv`` (one row per training run) and
``.md`` (both stages as tables, and the chosen configuration). The chosen values then
become the library's defaults (``GRU4RecConfig``/``BERT4RecConfig`` and
``course_lib.train.RECOMMENDED``), and ``benchmarks/sequential.py`` measures them on the
test items, over three seeds.

    python benchmarks/sequential_search.py --model bert4rec --trials 8 --top 2 --threads 1
    python benchmarks/sequential_search.py --model gru4rec --trials 16 --threads 1

Not run by the test suite.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

# Each space: model-config fields and training options (TrainConfig fields) with their candidate values.
SPACES = {
    "gru4rec": {
        "model": {"hidden": [64, 128, 256], "emb_dim": [64, 128], "dropout": [0.1, 0.25, 0.4]},
        "train": {"lr": [1e-3, 3e-3, 1e-2], "batch_size": [32, 64, 128], "schedule": ["constant", "cosine"],
                  "epochs": [30], "patience": [5]},
    },
    # BERT4Rec trains 3-5x more epochs than SASRec (Petrov & Macdonald 2022), so its space is a small
    # full grid over what decides how fast it learns: learning rate, mask rate, schedule
    "bert4rec": {
        "model": {"hidden": [64], "dropout": [0.2], "mask_prob": [0.2, 0.4], "n_heads": [2], "n_blocks": [2]},
        "train": {"lr": [2e-3, 4e-3], "batch_size": [64], "schedule": ["constant", "linear"],
                  "warmup": [0.05], "epochs": [80], "patience": [20]},
    },
}


def grid(space: dict) -> list[dict]:
    """Every configuration of ``space``, in a fixed order."""
    keys = [(part, k) for part in ("model", "train") for k in space[part]]
    out = []
    for values in itertools.product(*(space[part][k] for part, k in keys)):
        c = {"model": {}, "train": {}}
        for (part, k), v in zip(keys, values):
            c[part][k] = v
        out.append(c)
    return out


def sample(space: dict, n: int, seed: int) -> list[dict]:
    """``n`` distinct configurations drawn uniformly from ``space`` (a fixed ``seed``: the same list every
    time); the whole grid when it has at most ``n`` points."""
    full = grid(space)
    if len(full) <= n:
        return full
    rng = random.Random(seed)
    seen, out = set(), []
    for _ in range(100 * n):
        c = {part: {k: rng.choice(v) for k, v in space[part].items()} for part in ("model", "train")}
        key = json.dumps(c, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(c)
        if len(out) == n:
            break
    return out


def run_trial(model_name: str, cand: dict, seed: int, threads: int) -> dict:
    """Train one configuration with one seed; return its validation result (the test items are not scored)."""
    import torch

    import course_lib as cl
    from course_lib import data, prep
    from course_lib.models.bert4rec import BERT4Rec, BERT4RecConfig
    from course_lib.models.gru4rec import GRU4Rec, GRU4RecConfig
    from course_lib.train import train

    torch.set_num_threads(threads)
    cl.seed_everything(seed)
    split = prep.leave_one_out(data.load_interactions("ml-100k"))
    if model_name == "gru4rec":
        model = GRU4Rec(split.n_items, GRU4RecConfig(max_len=50, **cand["model"]))
    else:
        model = BERT4Rec(split.n_items, BERT4RecConfig(max_len=50, **cand["model"]))
    hist = train(model, split, seed=seed, progress=False, device="cpu", **cand["train"])
    return {"seed": seed, "valid_NDCG@10": hist.best_score, "best_epoch": hist.best_epoch,
            "epochs_run": hist.epochs, "seconds": hist.seconds,
            **{f"m.{k}": v for k, v in cand["model"].items()}, **{f"t.{k}": v for k, v in cand["train"].items()}}


def _label(cand: dict) -> str:
    return ", ".join(f"{k}={v}" for part in ("model", "train") for k, v in cand[part].items()
                     if k not in ("n_heads", "n_blocks", "epochs", "patience"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(SPACES), required=True)
    p.add_argument("--trials", type=int, default=12, help="random configurations in stage 1")
    p.add_argument("--top", type=int, default=3, help="configurations confirmed with more seeds in stage 2")
    p.add_argument("--confirm-seeds", type=int, default=2, help="extra training seeds per confirmed configuration")
    p.add_argument("--search-seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=300.0, help="training-time budget per seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in the CSV (same trial and seed) instead of training them again")
    a = p.parse_args(argv)
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / f"sequential_search_{a.model}"
    out.parent.mkdir(parents=True, exist_ok=True)

    cands = sample(SPACES[a.model], a.trials, a.search_seed)
    rows = []
    if a.resume and out.with_suffix(".csv").exists():
        rows = [r for r in pd.read_csv(out.with_suffix(".csv")).to_dict("records") if r["trial"] < len(cands)]
        print(f"resuming: {len(rows)} runs read from {out.with_suffix('.csv')}")
    t0 = time.perf_counter()

    def record(i, cand, seed, stage):
        done = [r for r in rows if r["trial"] == i and r["seed"] == seed]
        if done:
            assert done[0]["config"] == _label(cand), "the CSV holds another search: drop --resume or --out elsewhere"
            return
        r = run_trial(a.model, cand, seed, a.threads)
        r.update(trial=i, stage=stage, config=_label(cand))
        rows.append(r)
        pd.DataFrame(rows).to_csv(out.with_suffix(".csv"), index=False)  # written after every run: nothing is lost
        print(f"[{time.perf_counter() - t0:6.0f} s] stage {stage} trial {i:2d} seed {seed}: valid NDCG@10 "
              f"{r['valid_NDCG@10']:.4f} (epoch {r['best_epoch']}/{r['epochs_run']}, {r['seconds']:.0f} s)  "
              f"{r['config']}", flush=True)

    for i, cand in enumerate(cands):
        record(i, cand, 0, 1)
    stage1 = pd.DataFrame([r for r in rows if r["stage"] == 1])
    top = stage1.sort_values("valid_NDCG@10", ascending=False).trial.head(a.top).tolist()
    for i in top:
        for s in range(1, 1 + a.confirm_seeds):
            record(i, cands[i], s, 2)
    df = pd.DataFrame(rows)
    conf = (df[df.trial.isin(top)].groupby("trial")
            .agg(config=("config", "first"), mean=("valid_NDCG@10", "mean"), std=("valid_NDCG@10", "std"),
                 seconds=("seconds", "mean"), best_epoch=("best_epoch", "mean"), seeds=("seed", "count"))
            .sort_values("mean", ascending=False))
    fits = conf[conf.seconds <= a.max_seconds]
    winner = int((fits if len(fits) else conf).index[0])

    def md(frame):
        cols = list(frame.columns)
        lines = ["| " + " | ".join(map(str, cols)) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
        for _, r in frame.iterrows():
            lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) and abs(v) < 1 else
                                            (f"{v:.0f}" if isinstance(v, float) else str(v)) for v in r) + " |")
        return "\n".join(lines)

    s1 = stage1.sort_values("valid_NDCG@10", ascending=False)[["trial", "config", "valid_NDCG@10", "best_epoch",
                                                                "epochs_run", "seconds"]]
    text = "\n".join([
        f"# Hyper-parameter search: {a.model} on ml-100k (validation split only)\n",
        f"Command: `python benchmarks/sequential_search.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
        f"Machine: {os.cpu_count()} logical CPUs, {a.threads} torch thread(s); total {time.perf_counter() - t0:.0f} s. "
        "Every number is the best validation NDCG@10 of a run with early stopping (full ranking, seen items "
        "excluded); the test items were not scored.\n",
        f"## Stage 1: {len(cands)} configurations ({'the whole grid' if len(cands) == len(grid(SPACES[a.model])) else 'random draws'}), seed 0\n", md(s1), "",
        f"## Stage 2: the top {a.top}, seeds 0-{a.confirm_seeds}\n", md(conf.reset_index()), "",
        f"**Chosen** (best mean validation NDCG@10 with mean training time <= {a.max_seconds:.0f} s): "
        f"trial {winner}: `{json.dumps(cands[winner], sort_keys=True)}`\n",
    ])
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
