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
    python benchmarks/sequential.py --compare-recbole  # the course's models beside RecBole's (make recbole)

``--compare-recbole`` writes a third table, ``benchmarks/results/sequential_recbole.md``
(+ ``.json``): GRU4Rec, SASRec and BERT4Rec of the course and of RecBole 1.2.1 (run in
its own environment, ``.venv-recbole``, by ``benchmarks/recbole_run.py``) on exactly the
same leave-one-out split of ml-100k, checked user by user.

Not run by the test suite. Timings depend on the machine and on whatever else runs on it.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import tempfile
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
    # every model answers fit(split, **options); neural ones fill in their own train_defaults (the classic ones
    # have no training options and ignore them)
    options = {k: args[k] for k in ("epochs", "patience") if args.get(k) is not None}
    t0 = time.perf_counter()
    model.fit(split, device=args["device"], amp=args["amp"], seed=args["seed"], progress=False, **options)
    seconds = time.perf_counter() - t0
    hist = getattr(model, "history_", None)
    best_epoch, epochs_run = (hist.best_epoch, hist.epochs) if hist is not None else (0, 0)
    training = model.training_options(**options) if hasattr(model, "training_options") else {}
    full = metrics.evaluate(model, split, ks=(10,))
    sampled = metrics.evaluate(model, split, ks=(10,), sampled=100, sampler="uniform", seed=args["seed"])
    return {"model": args["model"], "seed": args["seed"], "HR@10": full["HR@10"], "NDCG@10": full["NDCG@10"],
            "sampled HR@10": sampled["HR@10"], "sampled NDCG@10": sampled["NDCG@10"],
            "best epoch": best_epoch, "epochs run": epochs_run, "train s": seconds, "peak MB": _peak_mb(device),
            "device": str(device or "cpu"),
            "training": ", ".join(f"{k} {v}" for k, v in training.items()) or "-"}


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
                     "train s": ms("train s", "{:.1f}"), "peak MB": f"{g['peak MB'].max():.0f}",
                     "training (fit's options)": g["training"].iloc[0]})
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


# ----------------------------------------------------------------------------- comparison with RecBole

RECBOLE_NAMES = {"gru4rec": "GRU4Rec", "sasrec": "SASRec", "bert4rec": "BERT4Rec"}
RECBOLE_PYTHON = ROOT / ".venv-recbole" / "bin" / "python"
RECBOLE_RUN = ROOT / "benchmarks" / "recbole_run.py"
RECBOLE_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")


def course_time_order(split) -> pd.DataFrame:
    """All interactions of a leave-one-out ``split`` in the course's time order: user by user,
    training items in the order the split keeps them, then the validation item, then the test
    item. Returns a frame with the course's ``user``, ``item`` and ``rating`` and ``position``:
    the row's place in that order (0, 1, 2, ...), a tie-free time stamp for RecBole."""
    frames = (split.train, split.valid, split.test)
    parts = [f[["user", "item"]].assign(rating=f["rating"] if "rating" in f.columns else 1.0, _stage=k)
             for k, f in enumerate(frames)]
    df = pd.concat(parts, ignore_index=True)
    # stable: within a user, training rows keep their (time) order, validation and test come last
    df = df.sort_values(["user", "_stage"], kind="mergesort").drop(columns="_stage").reset_index(drop=True)
    df["position"] = np.arange(len(df), dtype=np.int64)
    return df


def export_recbole_atomic(split, folder) -> Path:
    """Write ``split`` as RecBole's atomic file ``folder/ml-100k/ml-100k.inter``: tab separated,
    a typed header (``user_id:token``, ``item_id:token``, ``rating:float``, ``timestamp:float``),
    raw user and item IDs as tokens and, as time stamp, each interaction's position in the
    course's time order (``course_time_order``), so RecBole's sort by time cannot order ties
    differently from the course's split. Returns the file's path."""
    df = course_time_order(split)
    out = pd.DataFrame({RECBOLE_HEADER[0]: split.user_map.decode(df["user"].to_numpy()),
                        RECBOLE_HEADER[1]: split.item_map.decode(df["item"].to_numpy()),
                        RECBOLE_HEADER[2]: df["rating"].astype(float).to_numpy(),
                        RECBOLE_HEADER[3]: df["position"].to_numpy()})
    path = Path(folder) / "ml-100k" / "ml-100k.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, sep="\t", index=False, lineterminator="\n")
    return path


def course_test_items(split) -> dict[str, str]:
    """The course's test item of every user, as raw tokens: ``{user token: item token}``."""
    users = split.user_map.decode(split.test["user"].to_numpy())
    items = split.item_map.decode(split.test["item"].to_numpy())
    return {str(u): str(i) for u, i in zip(users.tolist(), items.tolist())}


def test_item_mismatches(course: dict[str, str], recbole: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    """Users whose test item differs between the course's split and RecBole's (or who are
    missing from one of them). Returns ``[(user, course item, RecBole item)]``, ``None`` for a
    missing side; empty when both splits hold out the same item for every user."""
    return [(u, course.get(u), recbole.get(u)) for u in sorted(set(course) | set(recbole), key=str)
            if course.get(u) != recbole.get(u)]


def recbole_problem(python) -> str | None:
    """Why ``python`` cannot run RecBole (missing, or ``recbole_run.py --check`` fails), or ``None``
    when it can."""
    python = Path(python)
    if not python.exists():
        return f"{python} does not exist"
    try:
        res = subprocess.run([str(python), str(RECBOLE_RUN), "--check"], capture_output=True, text=True,
                             timeout=600, env=_recbole_env(1))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} could not be run: {exc}"
    if res.returncode != 0:
        tail = (res.stdout + res.stderr).strip().splitlines()[-3:]
        return f"{python} cannot import RecBole: " + " / ".join(tail)
    return None


def recbole_install_message(python, problem: str) -> str:
    """What to print when RecBole is not available: the problem and how to install it."""
    return (f"RecBole is not available: {problem}.\n"
            "Install RecBole 1.2.1 in its own environment (.venv-recbole) with:\n\n"
            "    make recbole\n\n"
            "then run this command again (or point --recbole-python at a Python with recbole==1.2.1).")


def _recbole_env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONHASHSEED="0")
    return env


def run_recbole(python, data_dir, model: str, seed: int, epochs: int, patience: int, out: Path, threads: int) -> dict:
    """One RecBole run (``benchmarks/recbole_run.py`` in RecBole's Python, OMP_NUM_THREADS=threads).
    ``patience`` counts validations without improvement, as the course's trainer does
    (RecBole's ``stopping_step`` is one less). Returns the run's JSON report; raises with the
    run's output if it fails."""
    cmd = [str(python), str(RECBOLE_RUN), str(data_dir), RECBOLE_NAMES[model], "--seed", str(seed),
           "--epochs", str(epochs), "--stopping-step", str(max(patience - 1, 0)), "--threads", str(threads),
           "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_recbole_env(threads))
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"RecBole run failed ({' '.join(cmd)}), exit {res.returncode}:\n{tail}")
    return json.loads(Path(out).read_text(encoding="utf-8"))


def _mean_std(values, fmt="{:.4f}") -> str:
    values = np.asarray(values, dtype=float)
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{fmt.format(values.mean())} ± {fmt.format(sd)}"


def course_hyperparameters(model: str) -> str:
    """The course model's configuration and the trainer's defaults, as ``key=value`` text."""
    from dataclasses import asdict

    from course_lib.train import TrainConfig

    m = build_model(model, 10, 50)
    cfg = asdict(m.config)
    t = TrainConfig(**m.training_options())
    cfg.update(optimizer="AdamW", lr=t.lr, batch_size=t.batch_size, epochs=t.epochs, patience=t.patience,
               schedule=t.schedule, warmup=t.warmup, weight_decay=t.weight_decay, grad_clip=t.grad_clip,
               batching=t.batching)
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


def recbole_hyperparameters(run: dict) -> str:
    """The RecBole model's published hyper-parameters (its ``properties/model/<Model>.yaml``) and
    the training settings, with the values the run used, as ``key=value`` text."""
    cfg = run["config"]
    keys = list(run["published_files"].get(f"properties/model/{run['model']}.yaml", {}))
    keys += ["MAX_ITEM_LIST_LENGTH", "learner", "learning_rate", "train_batch_size", "weight_decay", "clip_grad_norm"]
    return ", ".join(f"{k}={cfg.get(k)}" for k in dict.fromkeys(keys))


def compare_recbole(a, models: list[str], patience_for: dict, argv) -> int:
    """The ``--compare-recbole`` mode: RecBole's and the course's GRU4Rec, SASRec and BERT4Rec on the
    same split. Returns the exit code (2: RecBole not installed, 1: the splits differ)."""
    python = Path(a.recbole_python)
    problem = recbole_problem(python)
    if problem:
        print(recbole_install_message(python, problem), file=sys.stderr)
        return 2
    from course_lib import data, prep

    models = [m for m in models if m in NEURAL]
    if not models:
        print(f"--compare-recbole compares {sorted(NEURAL)}; none of them is in --models", file=sys.stderr)
        return 2
    seeds = list(range(a.seeds))
    threads = a.threads or 1
    device = "cpu" if a.device == "auto" else a.device
    out_md = Path(a.recbole_out)
    out_json = out_md.with_suffix(".json")
    t_start = time.perf_counter()

    split = prep.leave_one_out(data.load_interactions("ml-100k"))
    course_items = course_test_items(split)
    work = Path(tempfile.mkdtemp(prefix="recbole-compare-"))
    inter = export_recbole_atomic(split, work / "data")
    print(f"exported {split} to {inter} (RecBole's runs and logs go beside it)")
    # each side trains with its own recipe: RecBole at most --recbole-epochs epochs (of every prefix of every
    # history: ~100x the rows of one course epoch), the course with each model's train_defaults unless
    # --epochs / --patience say otherwise
    rb_epochs, rb_patience = a.recbole_epochs, a.patience or 5
    print(f"RecBole ({python}): {len(models)} models x {len(seeds)} seeds (epochs <= {rb_epochs}, "
          f"patience {rb_patience}), {threads} thread(s)")
    rb_runs, mismatches = [], []
    for m in models:
        for s in seeds:
            rep = run_recbole(python, work / "data", m, s, rb_epochs, patience_for.get(m, rb_patience),
                              work / f"{m}-{s}.json", threads)
            bad = test_item_mismatches(course_items, rep.pop("test items"))
            rep.update(course_model=m, test_item_mismatches=len(bad))
            rb_runs.append(rep)
            print(f"  RecBole {RECBOLE_NAMES[m]:<8} seed {s}: NDCG@10 {rep['test, seen items excluded']['NDCG@10']:.4f} "
                  f"(RecBole's protocol {rep['test']['NDCG@10']:.4f}), best epoch {rep['best epoch']} of "
                  f"{rep['epochs run']}, {rep['train s']:.0f} s; test items differing from the course's: {len(bad)}",
                  flush=True)
            if bad:
                mismatches = bad
                break
        if mismatches:
            break
    n_bad = sum(r["test_item_mismatches"] for r in rb_runs)
    raw = {"command": f"python benchmarks/sequential.py {' '.join(argv if argv is not None else sys.argv[1:])}",
           "machine": machine(), "split": repr(split), "exported file": str(inter),
           "test item mismatches": n_bad, "recbole runs": rb_runs}
    out_md.parent.mkdir(parents=True, exist_ok=True)
    if mismatches:
        raw["mismatch examples (user, course item, RecBole item)"] = mismatches[:20]
        out_json.write_text(json.dumps(raw, indent=1), encoding="utf-8")
        print(f"FAILED: RecBole's split holds out a different test item than the course's for {len(mismatches)} "
              f"user(s), e.g. {mismatches[:5]}; the comparison would not be on the same split. Runs so far: "
              f"{out_json}", file=sys.stderr)
        return 1

    print(f"course: {len(models)} models x {len(seeds)} seeds on {device}")
    _, course_raw = quality_table(models, seeds, a.epochs, a.patience, device, a.amp, threads, patience_for=patience_for)
    raw["course runs"] = course_raw.to_dict(orient="records")

    rows = []
    for m in models:
        c = course_raw[course_raw.model == m]
        r = [x for x in rb_runs if x["course_model"] == m]
        rows.append({"model": LABELS[m], "implementation": "course",
                     "NDCG@10": _mean_std(c["NDCG@10"]), "HR@10": _mean_std(c["HR@10"]),
                     "NDCG@10 / HR@10, seen items kept": "-",
                     "best epoch / epochs run": f"{c['best epoch'].mean():.1f} / {c['epochs run'].mean():.1f}",
                     "train s": _mean_std(c["train s"], "{:.1f}"), "hyper-parameters": course_hyperparameters(m)})
        rows.append({"model": LABELS[m], "implementation": "RecBole 1.2.1",
                     "NDCG@10": _mean_std([x["test, seen items excluded"]["NDCG@10"] for x in r]),
                     "HR@10": _mean_std([x["test, seen items excluded"]["HR@10"] for x in r]),
                     "NDCG@10 / HR@10, seen items kept": f"{np.mean([x['test']['NDCG@10'] for x in r]):.4f} / "
                                                          f"{np.mean([x['test']['HR@10'] for x in r]):.4f}",
                     "best epoch / epochs run": f"{np.mean([x['best epoch'] for x in r]):.1f} / "
                                                f"{np.mean([x['epochs run'] for x in r]):.1f}",
                     "train s": _mean_std([x["train s"] for x in r], "{:.1f}"),
                     "hyper-parameters": recbole_hyperparameters(r[0])})
    table = pd.DataFrame(rows)
    pat = f"RecBole: patience {rb_patience}" + "".join(f", {LABELS[k]} {v}" for k, v in patience_for.items())
    text = "\n".join([
        "# Sequential recommenders: the course beside RecBole 1.2.1\n",
        f"Machine: {machine()}.  ",
        f"Command: `{raw['command']}`\n",
        f"Both sides train and test on the same split of MovieLens-100k: the course's leave-one-out by time "
        f"(`prep.leave_one_out`: {split.n_users:,} users, {split.n_items:,} items), exported as RecBole's atomic file "
        "with each interaction's position in the course's time order as its time stamp, and read by RecBole with "
        "`eval_args: {split: {LS: valid_and_test}, order: TO, mode: full, group_by: user}`. RecBole's test item "
        f"equals the course's for every user in every run: **{n_bad} mismatches**.\n",
        f"NDCG@10 / HR@10: full ranking with each user's earlier items removed from the candidates (the course's "
        f"protocol; for RecBole recomputed from its best checkpoint); RecBole's own evaluation of sequential models "
        f"keeps seen items as candidates, shown in its own column. Each side trains with its own recipe and "
        f"early stopping on validation NDCG@10: RecBole at most {rb_epochs} epochs ({pat} validations without "
        f"improvement, its `stopping_step` one less), the course with each model's `train_defaults` "
        f"(hyper-parameters column){'' if a.epochs is None else f', capped at {a.epochs} epochs'}; "
        f"mean ± std over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), {threads} CPU thread(s) each, "
        f"course on {device}, RecBole on cpu. Each side keeps its own published hyper-parameters (RecBole: "
        "`properties/model/<Model>.yaml` and `overall.yaml` of the installed package; the course: the model's "
        "config and its `train_defaults`). RecBole trains on every prefix of each training history, one target "
        "per row (`MAX_ITEM_LIST_LENGTH` 50); the course on one row per user per epoch, the user's last 51 "
        "training items (`train.training_sequences`). Train s: training including the per-epoch validation.\n",
        _md(table), "",
        f"Total wall time: {time.perf_counter() - t_start:.0f} s.\n"])
    raw["table"] = table.to_dict(orient="records")
    out_json.write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    out_md.write_text(text, encoding="utf-8")
    print("\n" + text)
    print(f"written to {out_md} (+ {out_json.name}); RecBole's runs and logs: {work}")
    return 0


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
    p.add_argument("--epochs", type=int, default=None,
                   help="cap per neural model (default: each model's own, from its train_defaults)")
    p.add_argument("--patience", type=int, default=None, help="default: each model's own (train_defaults)")
    p.add_argument("--patience-for", action="append", default=[], metavar="MODEL=N",
                   help="a model's own patience, e.g. bert4rec=15 (BERT4Rec plateaus early, then improves)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (ignored on CPU)")
    p.add_argument("--speed-batches", type=int, default=5, help="timed batches per model for the speed table")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sequential.md"))
    p.add_argument("--compare-recbole", action="store_true",
                   help="instead of the tables: the neural models beside RecBole 1.2.1's on the same split "
                        "(needs make recbole); 1 CPU thread per run unless --threads, course on the CPU unless --device")
    p.add_argument("--recbole-python", default=str(RECBOLE_PYTHON), help="Python of RecBole's environment")
    p.add_argument("--recbole-epochs", type=int, default=50,
                   help="RecBole's epoch cap (its epochs cover every prefix of every history: about 100 course epochs)")
    p.add_argument("--recbole-out", default=str(ROOT / "benchmarks" / "results" / "sequential_recbole.md"),
                   help="markdown table of --compare-recbole (raw runs beside it, .json)")
    a = p.parse_args(argv)
    models = [m.strip().lower() for m in a.models.split(",") if m.strip()]
    bad = [m for m in models if m not in ALL_MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {ALL_MODELS}")
    tables = {t.strip() for t in a.table.split(",")}
    if not tables <= {"quality", "speed"}:
        p.error("--table takes quality, speed or quality,speed")
    if a.quick:
        a.seeds, a.epochs, a.patience, a.speed_batches = 1, min(a.epochs or 6, 6), min(a.patience or 2, 2), min(a.speed_batches, 2)
    threads = a.threads or os.cpu_count() or 1
    try:
        patience_for = {k.strip().lower(): int(v) for k, v in (x.split("=", 1) for x in a.patience_for)}
    except ValueError:
        p.error("--patience-for takes MODEL=N, e.g. bert4rec=15")
    if set(patience_for) - set(ALL_MODELS):
        p.error(f"--patience-for: unknown model(s) {sorted(set(patience_for) - set(ALL_MODELS))}")
    if a.compare_recbole:
        return compare_recbole(a, models, patience_for, argv)

    out = [f"# Sequential recommenders benchmark\n",
           f"Machine: {machine()}.  ",
           f"Command: `python benchmarks/sequential.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n"]
    t_start = time.perf_counter()
    if "quality" in tables:
        print(f"quality on ml-100k: {len(models)} models x {a.seeds} seeds (epochs, patience: "
              f"{'each model' + chr(39) + 's own' if a.epochs is None else (a.epochs, a.patience)})")
        table, raw = quality_table(models, list(range(a.seeds)), a.epochs, a.patience, a.device, a.amp, threads,
                                   patience_for=patience_for)
        out += ["## Quality on MovieLens-100k\n",
                f"Leave-one-out by time, full ranking with seen items excluded (and 100 uniformly sampled negatives), "
                f"histories of at most 50 items, library default configurations trained by `model.fit(split)` with "
                f"each model's own training options (last column: `train_defaults`, chosen on the validation split; "
                f"AdamW, early stopping on validation NDCG@10"
                f"{'' if a.epochs is None else f', here capped at {a.epochs} epochs'}"
                f"{'' if a.patience is None else f', patience {a.patience}'}"
                f"{''.join(f', {LABELS[k]} patience {v}' for k, v in patience_for.items())}); mean ± std over "
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
