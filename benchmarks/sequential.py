"""Benchmark of the sequential recommenders: quality on ml-100k, speed on MovieLens-1M-shaped data.

Two tables, printed as markdown and written to ``benchmarks/results/sequential.md``:

* **quality** on MovieLens-100k: leave-one-out by time, full ranking with seen items excluded,
  histories of at most 50 items; every model over several seeds (mean ± std): HR@10 and
  NDCG@10 with full ranking and with 100 uniformly sampled negatives, epochs to the best
  validation NDCG@10, total training time and peak memory. Each (model, seed) runs in a
  fresh process, so its peak resident memory (or peak CUDA memory) is its own.
* **speed** on synthetic data shaped like MovieLens-1M (6,040 users, 3,416 items, about
  1M interactions, histories of at most 200): seconds per training epoch, **extrapolated**
  from a few timed batches (after one warm-up batch), plus one timed full-ranking
  validation pass. With ``--device cuda --amp`` it uses bf16 autocast, as the trainer does.

    python benchmarks/sequential.py                    # both tables, 3 seeds
    python benchmarks/sequential.py --quick            # 1 seed, few epochs: a smoke test
    python benchmarks/sequential.py --models sasrec,bert4rec --table speed --device cuda --amp

Not run by the test suite. Timings depend on the machine and on whatever else runs on it.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ALL_MODELS = ["popularity", "markov", "gru4rec", "sasrec", "bert4rec"]
NEURAL = {"gru4rec", "sasrec", "bert4rec"}
LABELS = {"popularity": "Popularity", "markov": "Markov", "gru4rec": "GRU4Rec", "sasrec": "SASRec", "bert4rec": "BERT4Rec"}


def build_model(name: str, n_items: int, max_len: int):
    from course_lib.models import GRU4Rec, GRU4RecConfig, MarkovChain, Popularity
    from course_lib.models.bert4rec import BERT4Rec, BERT4RecConfig
    from course_lib.models.sasrec import SASRec, SASRecConfig

    if name == "popularity":
        return Popularity()
    if name == "markov":
        return MarkovChain()
    if name == "gru4rec":
        return GRU4Rec(n_items, GRU4RecConfig(max_len=max_len))
    if name == "sasrec":
        return SASRec(n_items, SASRecConfig(max_len=max_len))
    if name == "bert4rec":
        return BERT4Rec(n_items, BERT4RecConfig(max_len=max_len))
    raise ValueError(f"unknown model {name!r}; choose from {ALL_MODELS}")


def _peak_mb(device) -> float:
    import torch

    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if platform.system() == "Darwin" else 2**10)


# ----------------------------------------------------------------------------- quality


def _quality_run(args: dict) -> dict:
    """One (model, seed) run, in its own process."""
    import torch

    import course_lib as cl
    from course_lib import data, metrics, prep, train

    torch.set_num_threads(args["threads"])
    cl.seed_everything(args["seed"])
    split = prep.leave_one_out(data.load_interactions("ml-100k"))
    model = build_model(args["model"], split.n_items, 50)
    device = cl.get_device(args["device"]) if args["model"] in NEURAL else None
    if device is not None and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    if args["model"] in NEURAL:
        hist = train.train(model, split, epochs=args["epochs"], patience=args["patience"], device=args["device"],
                           amp=args["amp"], seed=args["seed"], progress=False)
        best_epoch, epochs_run = hist.best_epoch, hist.epochs
        seconds = hist.seconds
    else:
        model.fit(split)
        best_epoch, epochs_run, seconds = 0, 0, time.perf_counter() - t0
    full = metrics.evaluate(model, split, ks=(10,))
    sampled = metrics.evaluate(model, split, ks=(10,), sampled=100, sampler="uniform", seed=args["seed"])
    return {"model": args["model"], "seed": args["seed"], "HR@10": full["HR@10"], "NDCG@10": full["NDCG@10"],
            "sampled HR@10": sampled["HR@10"], "sampled NDCG@10": sampled["NDCG@10"],
            "best epoch": best_epoch, "epochs run": epochs_run, "train s": seconds, "peak MB": _peak_mb(device),
            "device": str(device or "cpu")}


def quality_table(models, seeds, epochs, patience, device, amp, threads, progress=True,
                  patience_for: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = []
    ctx = mp.get_context("spawn")
    patience_for = patience_for or {}
    jobs = [dict(model=m, seed=s, epochs=epochs, patience=patience_for.get(m, patience), device=device, amp=amp,
                 threads=threads) for m in models for s in seeds]
    for job in jobs:
        with ctx.Pool(1) as pool:  # a fresh process per run: its own peak memory
            res = pool.apply(_quality_run, (job,))
        runs.append(res)
        if progress:
            print(f"  {LABELS[res['model']]:<10} seed {res['seed']}: NDCG@10 {res['NDCG@10']:.4f} "
                  f"(sampled {res['sampled NDCG@10']:.4f}), best epoch {res['best epoch']}, "
                  f"{res['train s']:.0f} s, {res['peak MB']:.0f} MB", flush=True)
    raw = pd.DataFrame(runs)
    rows = []
    for m in models:
        g = raw[raw.model == m]

        def ms(col, fmt="{:.4f}"):
            sd = g[col].std(ddof=1) if len(g) > 1 else 0.0
            return f"{fmt.format(g[col].mean())} ± {fmt.format(sd)}"

        rows.append({"model": LABELS[m], "HR@10": ms("HR@10"), "NDCG@10": ms("NDCG@10"),
                     "sampled HR@10": ms("sampled HR@10"), "sampled NDCG@10": ms("sampled NDCG@10"),
                     "epochs to best": ms("best epoch", "{:.1f}") if m in NEURAL else "-",
                     "train s": ms("train s", "{:.1f}"), "peak MB": f"{g['peak MB'].max():.0f}"})
    return pd.DataFrame(rows), raw


# ----------------------------------------------------------------------------- speed


def ml1m_like(n_users: int = 6040, n_items: int = 3416, n_interactions: int = 1_000_209, seed: int = 0) -> pd.DataFrame:
    """Synthetic interactions shaped like MovieLens-1M: the same numbers of users and items,
    about the same number of interactions, long-tailed history lengths (at least 20 per user,
    as in ML-1M) and Zipf-like item popularity. Only the shapes matter for timing."""
    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(mean=4.5, sigma=1.0, size=n_users)
    lengths = np.clip(lengths / lengths.sum() * n_interactions, 20, n_items // 2).astype(np.int64)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    users, items = [], []
    for u, n in enumerate(lengths, start=1):
        users.append(np.full(n, u))
        items.append(rng.choice(n_items, size=n, replace=False, p=popularity) + 1)
    users, items = np.concatenate(users), np.concatenate(items)
    return pd.DataFrame({"user": users, "item": items, "rating": np.float32(1.0),
                         "timestamp": np.arange(len(users), dtype=np.int64)})


def _speed_run(args: dict) -> dict:
    import torch

    import course_lib as cl
    from course_lib import metrics, prep, train

    torch.set_num_threads(args["threads"])
    cl.seed_everything(0)
    df = ml1m_like(seed=0)
    split = prep.leave_one_out(df)
    device = cl.get_device(args["device"])
    model = build_model(args["model"], split.n_items, 200).to(device)
    data = train.training_sequences(split, 200)
    batch_size = args["batch_size"]
    n_batches_epoch = math.ceil(len(data) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    use_amp = args["amp"] and device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(data), generator=gen)
    model.train()

    def step(b):
        idx = perm[(b * batch_size) % len(data):][:batch_size]
        batch = data[idx].to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step(0)  # warm-up (allocations, kernels)
    sync()
    n = min(args["batches"], n_batches_epoch)
    t0 = time.perf_counter()
    for b in range(1, n + 1):
        step(b)
    sync()
    per_batch = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
        metrics.evaluate(model, split, stage="valid", ks=(10,))
    sync()
    eval_s = time.perf_counter() - t0
    return {"model": args["model"], "device": str(device), "amp": bool(use_amp), "threads": args["threads"],
            "batches timed": n, "batches per epoch": n_batches_epoch, "s per batch": per_batch,
            "train s per epoch (extrapolated)": per_batch * n_batches_epoch, "eval s (valid, full ranking)": eval_s,
            "peak MB": _peak_mb(device), "users": split.n_users, "items": split.n_items, "interactions": len(df)}


def speed_table(models, device, amp, batches, batch_size, threads, progress=True) -> pd.DataFrame:
    ctx = mp.get_context("spawn")
    rows = []
    for m in [m for m in models if m in NEURAL]:
        with ctx.Pool(1) as pool:
            res = pool.apply(_speed_run, (dict(model=m, device=device, amp=amp, batches=batches,
                                               batch_size=batch_size, threads=threads),))
        res["model"] = LABELS[m]
        rows.append(res)
        if progress:
            print(f"  {res['model']:<10} {res['device']}: {res['s per batch']:.3f} s/batch -> "
                  f"{res['train s per epoch (extrapolated)']:.1f} s/epoch (extrapolated), eval {res['eval s (valid, full ranking)']:.1f} s, "
                  f"{res['peak MB']:.0f} MB", flush=True)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- main


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


def machine() -> str:
    import torch

    dev = "no CUDA"
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{dev}; load average at start {os.getloadavg()[0]:.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(ALL_MODELS), help=f"comma-separated subset of {ALL_MODELS}")
    p.add_argument("--table", default="quality,speed", help="quality, speed or both")
    p.add_argument("--quick", action="store_true", help="1 seed, at most 6 epochs, 2 timed batches")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=100, help="cap per neural model (early stopping decides)")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--patience-for", action="append", default=[], metavar="MODEL=N",
                   help="a model's own patience, e.g. bert4rec=15 (BERT4Rec plateaus early, then improves)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (ignored on CPU)")
    p.add_argument("--speed-batches", type=int, default=5, help="timed batches per model for the speed table")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sequential.md"))
    a = p.parse_args(argv)
    models = [m.strip().lower() for m in a.models.split(",") if m.strip()]
    bad = [m for m in models if m not in ALL_MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {ALL_MODELS}")
    tables = {t.strip() for t in a.table.split(",")}
    if not tables <= {"quality", "speed"}:
        p.error("--table takes quality, speed or quality,speed")
    if a.quick:
        a.seeds, a.epochs, a.patience, a.speed_batches = 1, min(a.epochs, 6), min(a.patience, 2), min(a.speed_batches, 2)
    threads = a.threads or os.cpu_count() or 1
    try:
        patience_for = {k.strip().lower(): int(v) for k, v in (x.split("=", 1) for x in a.patience_for)}
    except ValueError:
        p.error("--patience-for takes MODEL=N, e.g. bert4rec=15")
    if set(patience_for) - set(ALL_MODELS):
        p.error(f"--patience-for: unknown model(s) {sorted(set(patience_for) - set(ALL_MODELS))}")

    out = [f"# Sequential recommenders benchmark\n",
           f"Machine: {machine()}.  ",
           f"Command: `python benchmarks/sequential.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n"]
    t_start = time.perf_counter()
    if "quality" in tables:
        print(f"quality on ml-100k: {len(models)} models x {a.seeds} seeds (epochs <= {a.epochs}, patience {a.patience})")
        table, raw = quality_table(models, list(range(a.seeds)), a.epochs, a.patience, a.device, a.amp, threads,
                                   patience_for=patience_for)
        out += ["## Quality on MovieLens-100k\n",
                f"Leave-one-out by time, full ranking with seen items excluded (and 100 uniformly sampled negatives), "
                f"histories of at most 50 items, library default configurations, AdamW lr 1e-3, batch 128, early "
                f"stopping on validation NDCG@10 (patience {a.patience}{''.join(f', {LABELS[k]} {v}' for k, v in patience_for.items())}, "
                f"at most {a.epochs} epochs); mean ± std over "
                f"{a.seeds} seed(s). Train s: wall time of training including the per-epoch validation. Peak MB: "
                f"peak resident memory of the process that trained the model (peak CUDA memory on a GPU).\n",
                _md(table), ""]
        raw.to_csv(Path(a.out).with_suffix(".quality_runs.csv"), index=False)
    if "speed" in tables:
        print(f"speed on MovieLens-1M-shaped synthetic data, device {a.device}, amp {a.amp}")
        sp = speed_table(models, a.device, a.amp, a.speed_batches, a.batch_size, threads)
        keep = ["model", "device", "amp", "batches timed", "batches per epoch", "s per batch",
                "train s per epoch (extrapolated)", "eval s (valid, full ranking)", "peak MB"]
        if len(sp):
            shape = sp.iloc[0]
            out += ["## Speed on MovieLens-1M-shaped data\n",
                    f"Synthetic data with ML-1M's shape ({shape['users']:,} users, {shape['items']:,} items, "
                    f"{shape['interactions']:,} interactions, histories of at most 200), batch {a.batch_size}, "
                    f"{threads} CPU thread(s). Seconds per epoch are **extrapolated**: one warm-up batch, then "
                    f"{a.speed_batches} timed batches (forward, backward, AdamW step), times the batches of one epoch. "
                    "Eval s: one full-ranking pass over the validation items, measured.\n",
                    _md(sp[keep]), ""]
    out.append(f"Total benchmark wall time: {time.perf_counter() - t_start:.0f} s.\n")
    text = "\n".join(out)
    print("\n" + text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text, encoding="utf-8")
    print(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
