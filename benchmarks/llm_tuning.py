"""Tuning SmolLM2-135M-Instruct with LoRA for recommendation on MovieLens-100k: TALLRec and P5.

    python benchmarks/llm_tuning.py            # full run (1 thread; about 40 CPU-minutes, longer on a busy machine)
    python benchmarks/llm_tuning.py --quick    # a smoke run (a few minutes)

Protocol (notebook 13's, with more shots, seeds and users). Users are split once (seed 0)
into train (60%), validation (10%) and test (30%) users; ``--test`` and ``--valid`` of them
are used.

* **tallrec**: a TALLRec example per user: the 10 ratings before a candidate, "Yes" when
  the candidate's rating is above 3. Shots are drawn from training users (candidate at a
  random position), validation and test users are asked about their last rating. For each
  number of shots and seed: fresh LoRA adapters (r 8, alpha 16, q/v projections, AdamW lr
  3e-4, micro-batches of 2 with 2 accumulation steps, ``--epochs`` epochs (with more than
  one, the epoch is chosen by validation AUC) on the shots; test AUC with a 95% bootstrap interval;
  on the same test examples: the zero-shot model (fp32), SASRec and GRU4Rec trained on the
  same shots (windows as sequences, early stopping on the shots' candidates; a candidate
  scored by the model's next-item score after the window), and priors fit on all training
  users (item mean rating, the user's like-rate in the window, their logistic combination).
  Training time and the process's peak resident memory are recorded.
* **p5**: items written as numbers, indexed sequentially (user by user, in order of first
  appearance) or at random. The "last ID + 1" rule (no model) measures the leak; then one
  LoRA model per indexing is trained on three P5 tasks (next item, rating, like) of
  training users and ranks each test user's true next item among 99 unrated items by
  likelihood: HR@10 with 95% intervals, sequential vs random paired over users.

Writes benchmarks/results/llm_tuning.json and llm_tuning.md (the JSON after every run).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import ci, fmt  # noqa: E402


def auc3(x) -> list[float]:
    return [round(float(v), 4) for v in x]


def sequential_baselines(shots, test, catalog, seed: int, epochs: int) -> dict:
    """SASRec and GRU4Rec trained on the shots' windows; AUC of their candidate scores on the test examples."""
    from course_lib import train
    from course_lib.llm import tuning as T
    from course_lib.models import GRU4Rec, GRU4RecConfig
    from course_lib.models.sasrec import SASRec, SASRecConfig
    split = T.shots_split(shots, catalog)
    out = {}
    for name, model in (("sasrec", SASRec(split.n_items, SASRecConfig(max_len=T.WINDOW))),
                        ("gru4rec", GRU4Rec(split.n_items, GRU4RecConfig(max_len=T.WINDOW)))):
        train.train(model, split, epochs=epochs, patience=5, seed=seed, progress=False, device="cpu", batch_size=64)
        s = T.sequential_candidate_scores(model, test, split.item_map)
        out[name] = auc3(T.auc_ci(test.examples["label"], s, seed=seed))
    return out


def run_tallrec(args, lm, ml, users, res, save) -> None:
    from course_lib.llm import tuning as T
    titles = dict(zip(ml.items["item"], ml.items["title"]))
    pool = T.build_tallrec(ml.interactions, users["train"], position="random", seed=0)
    valid = T.build_tallrec(ml.interactions, users["valid"][: args.valid])
    test = T.build_tallrec(ml.interactions, users["test"][: args.test])
    y = test.examples["label"].to_numpy()
    train_ratings = ml.interactions[ml.interactions["user"].isin(users["train"])]
    priors = T.Priors.fit(train_ratings, pool).scores(test)
    tr = res["tallrec"] = {"protocol": {"window": T.WINDOW, "threshold": T.THRESHOLD, "train_users": len(pool),
                                        "valid_users": len(valid), "test_users": len(test),
                                        "test_liked_share": round(float(y.mean()), 3), "epochs_max": args.epochs,
                                        "micro_batch": args.micro_batch, "accumulation": args.accumulation,
                                        "lr": args.lr, "r": 8, "targets": ["q_proj", "v_proj"]},
                           "priors": {k: auc3(T.auc_ci(y, v)) for k, v in priors.items()}, "runs": []}
    tallrec = T.TallRec(lm, titles, batch_size=4)
    t0 = time.perf_counter()
    zero = tallrec.score(test)
    tr["zero_shot"] = {"auc": auc3(T.auc_ci(y, zero)), "valid_auc": round(T.auc(valid.examples["label"],
                                                                                   tallrec.score(valid)), 4),
                       "score_s_per_example": round((time.perf_counter() - t0) / (len(test) + len(valid)), 3)}
    print(f"zero-shot AUC {fmt(tr['zero_shot']['auc'])}; priors {tr['priors']['combined']}", flush=True)
    save()
    catalog = ml.items["item"].to_numpy()
    for seed in args.seeds:
        for n in args.shots:
            shots = pool.sample(n, seed=seed)
            tallrec.settings = T.LoraSettings(epochs=args.epochs, micro_batch=args.micro_batch,
                                              accumulation=args.accumulation, lr=args.lr, seed=seed)
            tallrec.fit(shots, valid=valid, progress=False)
            s = tallrec.score(test)
            run = {"shots": n, "seed": seed, "auc": auc3(T.auc_ci(y, s, seed=seed)),
                   "minus_zero_shot": auc3(T.auc_diff_ci(y, s, zero, seed=seed)),
                   "minus_prior": auc3(T.auc_diff_ci(y, s, priors["combined"], seed=seed)),
                   "zero_shot_auc": tr["zero_shot"]["auc"][0], "prior_auc": tr["priors"]["combined"][0],
                   "valid_auc_by_epoch": [round(a, 4) for a in tallrec.valid_auc_], "best_epoch": tallrec.best_epoch_,
                   "train_s": round(tallrec.result_.seconds, 1), "peak_rss_mb": round(T.peak_rss_mb(), 0),
                   "final_loss": round(float(np.mean(tallrec.result_.losses[-3:])), 4)}
            tallrec.unload()
            base = sequential_baselines(shots, test, catalog, seed, args.seq_epochs)
            run["sasrec_auc"], run["gru4rec_auc"] = base["sasrec"], base["gru4rec"]
            tr["runs"].append(run)
            print(f"{n:>4} shots seed {seed}: AUC {fmt(run['auc'])} (valid by epoch {run['valid_auc_by_epoch']}), "
                  f"SASRec {run['sasrec_auc'][0]:.3f}, GRU4Rec {run['gru4rec_auc'][0]:.3f}, "
                  f"{run['train_s']:.0f} s, {run['peak_rss_mb']:.0f} MB", flush=True)
            save()


def run_p5(args, lm, ml, users, res, save) -> None:
    from course_lib.llm import tuning as T
    from course_lib.llm.models import LM
    from course_lib.metrics import bootstrap_ci
    inter = ml.interactions
    cases = T.next_item_candidates(inter, users["test"][: args.p5_test], n_negatives=args.p5_negatives, seed=0)
    train_users = users["train"][: args.p5_train]
    p5 = res["p5"] = {"protocol": {"train_users": len(train_users), "test_users": len(cases),
                                   "candidates": args.p5_negatives + 1, "tasks": list(T.P5_TEMPLATES),
                                   "epochs": args.p5_epochs, "history_items": 10}, "indexings": {}}
    hits = {}
    for name, ids in (("sequential", T.sequential_ids(inter)), ("random", T.random_ids(ml.items["item"], seed=0))):
        rule = [T.last_plus_one_scores(ids.loc[h].to_numpy(), ids.loc[c].to_numpy())
                for h, c in zip(cases["history"], cases["candidates"])]
        rule_hr = T.hit_rate(rule, cases["candidates"], cases["target"], 10)
        rows = T.p5_examples(inter, train_users, ids, seed=0)
        settings = T.LoraSettings(epochs=args.p5_epochs, micro_batch=args.micro_batch,
                                  accumulation=args.accumulation, lr=args.lr, seed=0)
        peft = T.add_lora(lm.model, settings)
        result = T.train_lora(peft, lm.tokenizer, [lm.chat(p) for p in rows["prompt"]], rows["answer"].tolist(),
                              settings, progress=False)
        tuned = LM(peft.get_base_model(), lm.tokenizer, lm.device, lm.name)
        t0 = time.perf_counter()
        ll = [T.candidate_loglik(tuned, lm.chat(T.p5_prompt("next", u, ids.loc[h].to_numpy())), ids.loc[c].tolist())
              for u, h, c in zip(cases["user"], cases["history"], cases["candidates"])]
        score_s = (time.perf_counter() - t0) / len(cases)
        lm.model = T.remove_lora(peft)
        hits[name] = T.hit_rate(ll, cases["candidates"], cases["target"], 10)
        hr1 = T.hit_rate(ll, cases["candidates"], cases["target"], 1)
        p5["indexings"][name] = {"rule_hr10": ci(rule_hr), "llm_hr10": ci(hits[name]), "llm_hr1": ci(hr1),
                                 "train_examples": len(rows), "train_s": round(result.seconds, 1),
                                 "score_s_per_user": round(score_s, 2), "peak_rss_mb": round(T.peak_rss_mb(), 0)}
        print(f"P5 {name} IDs: last+1 rule HR@10 {fmt(ci(rule_hr))}, tuned LLM HR@10 {fmt(ci(hits[name]))} "
              f"({result.seconds:.0f} s training)", flush=True)
        save()
    p5["random_hr10"] = round(10 / (args.p5_negatives + 1), 4)
    d = hits["sequential"] - hits["random"]
    p5["llm_sequential_minus_random_hr10"] = [round(v, 4) for v in bootstrap_ci(d)]
    save()


def report(res: dict) -> str:
    lines = ["# Tuning SmolLM2-135M-Instruct for recommendation (TALLRec, P5)", "",
             f"Machine: {res['machine']}. Command: `{res['command']}`. Total wall time {res.get('total_s', 0):.0f} s.", ""]
    if res.get("notes"):
        lines += [res["notes"], ""]
    tr = res.get("tallrec")
    if tr:
        p = tr["protocol"]
        lines += ["## TALLRec: will the user like the candidate? (AUC on test users)", "",
                  f"{p['test_users']} test users ({p['test_liked_share']:.0%} liked), {p['valid_users']} validation users "
                  + (f"(the epoch, 1..{p['epochs_max']}, is chosen on them)" if p["epochs_max"] > 1 else
                     "(one epoch: their AUC is recorded, nothing is chosen on them)")
                  + f", shots from {p['train_users']} training users. "
                  f"LoRA r {p['r']} on {'/'.join(p['targets'])}, lr {p['lr']}, micro-batch {p['micro_batch']} x "
                  f"{p['accumulation']} accumulation. 95% bootstrap intervals over test users.", "",
                  "| shots | seed | TALLRec AUC | minus zero-shot (paired) | minus prior (paired) | SASRec | GRU4Rec | best epoch | train s | peak RSS MB |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in tr["runs"]:
            lines.append(f"| {r['shots']} | {r['seed']} | {fmt(r['auc'])} | {fmt(r['minus_zero_shot'])} | "
                         f"{fmt(r['minus_prior'])} | {fmt(r['sasrec_auc'])} | {fmt(r['gru4rec_auc'])} | "
                         f"{r['best_epoch']} | {r['train_s']:.0f} | {r['peak_rss_mb']:.0f} |")
        lines += ["", "Mean over seeds (the spread is the standard deviation across seeds):", "",
                  "| shots | TALLRec AUC | SASRec | GRU4Rec | seeds |", "| --- | --- | --- | --- | --- |"]
        for n in sorted({r["shots"] for r in tr["runs"]}):
            rs = [r for r in tr["runs"] if r["shots"] == n]

            def ms(key):
                v = np.array([r[key][0] for r in rs])
                return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"
            lines.append(f"| {n} | {ms('auc')} | {ms('sasrec_auc')} | {ms('gru4rec_auc')} | {len(rs)} |")
        lines += ["", "References on the same test users:", "", "| scorer | AUC |", "| --- | --- |",
                  f"| zero-shot SmolLM2 (fp32) | {fmt(tr['zero_shot']['auc'])} |"]
        names = {"item_mean": "prior: item mean rating (all training users)",
                 "user_rate": "prior: the user's like-rate in the window",
                 "combined": "prior: logistic combination of the two"}
        lines += [f"| {names[k]} | {fmt(v)} |" for k, v in tr["priors"].items()]
        lines.append("")
    p5 = res.get("p5")
    if p5 and p5.get("indexings"):
        p = p5["protocol"]
        lines += ["## P5: how item IDs are written (next item among candidates, HR@10)", "",
                  f"{p['test_users']} test users, the true next item among {p['candidates']} candidates (random HR@10 = "
                  f"{10 / p['candidates']:.2f}); one LoRA model per indexing trained for {p['epochs']} epoch(s) on "
                  f"{p['train_users']} training users x {len(p['tasks'])} tasks ({', '.join(p['tasks'])}).", "",
                  "| item IDs | 'last ID + 1' rule HR@10 | tuned LLM HR@10 | tuned LLM HR@1 | train s |",
                  "| --- | --- | --- | --- | --- |"]
        for name, r in p5["indexings"].items():
            lines.append(f"| {name} | {fmt(r['rule_hr10'])} | {fmt(r['llm_hr10'])} | {fmt(r['llm_hr1'])} | "
                         f"{r['train_s']:.0f} |")
        if "llm_sequential_minus_random_hr10" in p5:
            lines += ["", f"Tuned LLM, sequential minus random IDs, HR@10 paired over users: "
                          f"{fmt(p5['llm_sequential_minus_random_hr10'])}."]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shots", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--test", type=int, default=80, help="test users")
    ap.add_argument("--valid", type=int, default=24, help="validation users (the epoch choice when --epochs > 1)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seq-epochs", type=int, default=50, help="most epochs of SASRec / GRU4Rec on the shots")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--accumulation", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--p5-train", type=int, default=32, help="training users of the P5 tasks")
    ap.add_argument("--p5-test", type=int, default=40)
    ap.add_argument("--p5-negatives", type=int, default=99)
    ap.add_argument("--p5-epochs", type=int, default=1)
    ap.add_argument("--skip", choices=["tallrec", "p5"], default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.shots, args.seeds, args.test, args.valid, args.epochs, args.seq_epochs = [4, 8], [0], 16, 8, 1, 2
        args.p5_train, args.p5_test, args.p5_negatives, args.p5_epochs = 4, 6, 19, 1
    import torch
    torch.set_num_threads(args.threads)
    import course_lib as cl
    from course_lib import data
    from course_lib.llm import tuning as T
    from course_lib.llm.models import load_lm

    t_start = time.perf_counter()
    cl.seed_everything(0)
    ml = data.load_movielens("ml-100k")
    users = T.split_users(ml.interactions["user"], valid=0.1, test=0.3, seed=0)
    lm = load_lm(threads=args.threads, dtype="float32")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "llm_tuning_quick" if args.quick else "llm_tuning"
    res: dict = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}",
                 "command": "python benchmarks/llm_tuning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "model": lm.name}

    def save():
        res["total_s"] = round(time.perf_counter() - t_start, 1)
        (out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
        (out / f"{name}.md").write_text(report(res) + "\n")

    if args.skip != "tallrec":
        run_tallrec(args, lm, ml, users, res, save)
    if args.skip != "p5":
        run_p5(args, lm, ml, users, res, save)
    save()
    print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
