"""A conversational recommender on MovieLens-100k: the conductor against simulated users, with the A/B and simulation numbers.

    python benchmarks/llm_conductor.py            # full run (~20-30 min on 2 loaded CPU cores)
    python benchmarks/llm_conductor.py --quick    # a smoke run (writes llm_conductor_quick.*)

Protocol (notebook 16's, with more targets and another seed). Leave-one-out split; the users are
cut into two disjoint halves. Validation targets are the validation users' held-out (validation)
films, test targets the test users' held-out (test) films. A target is described by its genres,
decade, and the most recent film its user rated 4+ before it. The conductor
(course_lib.llm.dialogue) shows k = 5 films per list; a dialogue lasts at most 5 user messages;
the target is found at turn t when a list shown in reply to message t holds it (success@t).

* Tools: structured filter (genres, decade, relaxed when too few items match), a retriever
  (MiniLM dense, or the BM25+MiniLM RRF hybrid whose lexical weight is tuned on notebook 15's
  validation requests), training popularity, ItemKNN folded in from liked films; fusion weights
  chosen on the validation targets (rule-based simulator, "ask first") only.
* Policies: "recommend at once" (ask_budget 0) and "ask first" (ask_budget 2), with the tuned
  weights; retrievers: MiniLM vs hybrid with the retriever's weight set to 1 (the tuned weight
  may switch it off).
* Simulators: rule-based (templated answers from the target's metadata) on every test target;
  SmolLM2-135M-Instruct (persona + hidden target in the system prompt, reply prefilled with
  "I'm looking for", greedy, 30 new tokens, batched) on the first --llm test targets, both
  policies, and without the prefill ("ask first") as an ablation. Title leaks (rapidfuzz) counted and redacted; the share of simulated messages whose
  genres/decade agree with or contradict the target.
* Baselines without dialogue: popularity and ItemKNN on the user's full history, showing the
  next 5 films of their list per turn.
* ab_test: power of a two-proportion z-test between the two policies' measured success@5 at
  several sample sizes, and the A/A false-positive rate with and without peeking
  (course_lib.text_metrics).
* simulation: five course recommenders (Random, Popularity, ItemKNN, UserKNN, BPR-MF) used as
  the conductor's personal ranker (their scores for the user replace popularity; retriever and
  fold-in off), ranked by the rule-based simulator's success@5, against their offline HR@10 /
  NDCG@10 ranking on the same test users: Kendall's tau.
* rag and judge: read from the recorded benchmarks/results/llm_rag.json and llm_judge.json (not
  re-run here).

Rates carry 95% Wilson intervals; differences are paired over targets (bootstrap).
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

RESULTS = ROOT / "benchmarks" / "results"
WEIGHT_GRID = [(1, 1, 1), (1, 1, 0), (1, 2, 1), (0.5, 2, 1), (1, 0.5, 1), (0, 1, 1)]


def recorded(name: str, command: str, pick) -> dict:
    """A summary of a recorded benchmark result (never re-run here)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return {"command": command, "missing": f"{path.relative_to(ROOT)} not found: run `{command}` first"}
    return {"command": command, "file": str(path.relative_to(ROOT)), **pick(json.loads(path.read_text()))}


def rate(m: np.ndarray) -> list[float]:
    """``[share, low, high]``: a 0/1 column with its 95% Wilson interval."""
    from course_lib.text_metrics import wilson_ci
    return [round(float(m.mean()), 4), *[round(x, 4) for x in wilson_ci(int(m.sum()), len(m))]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--valid", type=int, default=200, help="validation targets")
    ap.add_argument("--test", type=int, default=400, help="test targets (rule-based simulator)")
    ap.add_argument("--llm", type=int, default=60, help="test targets also played by the LLM simulator")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.quick:
        args.valid, args.test, args.llm = 20, 40, 3
    K, T = 5, 5
    import torch
    torch.set_num_threads(args.threads)
    from scipy import stats
    from course_lib import data, metrics, prep, text_metrics as tm
    from course_lib.llm import conductor as C, dialogue as D
    from course_lib.llm.models import load_lm
    from course_lib.models import BPRMF, ItemKNN, Popularity, UserKNN
    from course_lib.models.random import RandomScores

    t_start = time.perf_counter()
    ml = data.load_movielens("ml-100k")
    split = prep.leave_one_out(ml.interactions)
    corpus = C.catalog_corpus(ml.items, dict(zip(split.item_map.raw.tolist(), split.item_popularity()[1:].tolist())))
    rng = np.random.default_rng(args.seed)
    users = rng.permutation(np.arange(1, split.n_users + 1))
    valid_users, test_users = users[: len(users) // 2], users[len(users) // 2:]
    valid_t = D.make_targets(split, corpus, valid_users, "valid", seed=args.seed, users_frame=ml.users)[: args.valid]
    test_t = D.make_targets(split, corpus, test_users, "test", seed=args.seed + 1, users_frame=ml.users)[: args.test]

    bm25, dense = C.BM25Retriever(corpus), C.DenseRetriever(corpus)
    requests, _ = C.query_sets(corpus, 60, 1, seed=args.seed)
    w_lex, _ = C.tune_weight(bm25, dense, requests, k=10)
    hybrid = C.HybridRetriever(bm25, dense, weight=w_lex)
    knn = ItemKNN().fit(split)
    similar = D.fold_in_scorer(knn, split, corpus)
    index = D.TitleIndex.from_titles(corpus.ids.tolist(), corpus.titles)

    def make_tools(retriever, weights, prior=None):
        return D.Tools(corpus, retriever, popularity=corpus.popularity if prior is None else prior,
                       similar=similar, weights=weights, index=index)

    def play(targets, sim, retriever, budget, weights):
        tools = make_tools(retriever, weights)
        return D.run_dialogues(targets, sim, lambda t: D.Conductor(tools, ask_budget=budget, k=K), max_turns=T)

    rule = D.RuleSimulator()
    res: dict = {"protocol": {"dataset": "ml-100k", "split": "leave-one-out", "seed": args.seed, "k": K,
                              "max_turns": T, "valid_targets": len(valid_t), "test_targets": len(test_t),
                              "hybrid_lexical_weight": w_lex, "quick": args.quick}}

    # ---------------------------------------------------------------- validation: the fusion weights
    grid = []
    for r, p, s in WEIGHT_GRID:
        w = {"retrieval": r, "popularity": p, "similar": s}
        m = D.success_matrix(play(valid_t, rule, hybrid, 2, w), T)
        grid.append({**w, "success@5": round(float(m[:, -1].mean()), 4), "success@3": round(float(m[:, 2].mean()), 4)})
    best = sorted(grid, key=lambda g: (-g["success@5"], -g["success@3"]))[0]
    weights = {k: best[k] for k in ("retrieval", "popularity", "similar")}
    res["validation"] = {"grid": grid, "chosen_weights": weights}
    print(f"validation done ({time.perf_counter() - t_start:.0f} s): {weights}", flush=True)

    # ---------------------------------------------------------------- test: rule-based simulator
    dia: dict = {"n": len(test_t), "systems": {}}
    mats, logs = {}, {}
    on = {**weights, "retrieval": 1.0}          # the retriever comparison needs the retriever switched on
    runs = {"rule/ask_first/hybrid": (2, hybrid, weights), "rule/recommend_at_once/hybrid": (0, hybrid, weights),
            "rule/ask_first/hybrid_w_ret=1": (2, hybrid, on), "rule/ask_first/dense_w_ret=1": (2, dense, on)}
    for key, (budget, retr, w) in runs.items():
        if key.endswith("w_ret=1") and weights["retrieval"] == 1.0 and "hybrid" in key:
            logs[key], mats[key] = logs["rule/ask_first/hybrid"], mats["rule/ask_first/hybrid"]
            continue
        logs[key] = play(test_t, rule, retr, budget, w)
        mats[key] = D.success_matrix(logs[key], T)
    enc = np.asarray([t.user for t in test_t])
    hist = split.history("test")
    for name, model in (("popularity", Popularity().fit(split)), ("itemknn_history", knn)):
        top = model.recommend(enc, [hist[u] for u in enc], k=K * T)
        raw = [[int(split.item_map.decode([i])[0]) for i in row if i > 0] for row in top]
        mats[f"list/{name}"] = D.list_success(raw, test_t, K, T)
    print(f"rule-based dialogues done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    # ---------------------------------------------------------------- test: the LLM simulator
    lm = load_lm(threads=args.threads)
    llm_t = test_t[: args.llm]
    llm_sim = D.LLMSimulator(lm, max_new_tokens=30, batch_size=8, threads=args.threads, prefill="I'm looking for")
    t0 = time.perf_counter()
    for policy, budget in (("ask_first", 2), ("recommend_at_once", 0)):
        key = f"llm/{policy}/hybrid"
        logs[key] = play(llm_t, llm_sim, hybrid, budget, weights)
        mats[key] = D.success_matrix(logs[key], T)
        print(f"LLM simulator, {policy} done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    # ablation: the same model with no prefill (chosen against on validation targets while building notebook 16)
    bare = D.LLMSimulator(lm, max_new_tokens=30, batch_size=8, threads=args.threads, prefill="")
    logs["llm_no_prefill/ask_first/hybrid"] = play(llm_t, bare, hybrid, 2, weights)
    mats["llm_no_prefill/ask_first/hybrid"] = D.success_matrix(logs["llm_no_prefill/ask_first/hybrid"], T)
    print(f"LLM simulator without prefill done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    n_llm_msgs = sum(len(lg.turns) for k in logs if k.startswith("llm") for lg in logs[k])
    llm_s = time.perf_counter() - t0

    for key, m in mats.items():
        row = {f"success@{t}": rate(m[:, t - 1]) for t in range(1, T + 1)}
        row["n"] = len(m)
        if key in logs:
            summ = D.summarize(logs[key], T)
            row.update(mean_turns_to_success=summ["mean_turns_to_success"], messages=summ["messages"],
                       title_leaks=summ["title_leaks"], agreement=summ["agreement"])
        dia["systems"][key] = row
    n_llm = len(llm_t)
    dia["paired_success@5"] = {
        "ask_first_minus_recommend_at_once (rule, hybrid)": ci(mats["rule/ask_first/hybrid"][:, -1] - mats["rule/recommend_at_once/hybrid"][:, -1]),
        "ask_first_minus_recommend_at_once at turn 1 (rule, hybrid)": ci(mats["rule/ask_first/hybrid"][:, 0] - mats["rule/recommend_at_once/hybrid"][:, 0]),
        "hybrid_minus_dense, retriever weight 1 (rule, ask first)": ci(mats["rule/ask_first/hybrid_w_ret=1"][:, -1] - mats["rule/ask_first/dense_w_ret=1"][:, -1]),
        "tuned_minus_retriever_weight_1 (rule, ask first, hybrid)": ci(mats["rule/ask_first/hybrid"][:, -1] - mats["rule/ask_first/hybrid_w_ret=1"][:, -1]),
        "ask_first_hybrid_minus_itemknn_history (rule)": ci(mats["rule/ask_first/hybrid"][:, -1] - mats["list/itemknn_history"][:, -1]),
        "llm_minus_rule (ask first, hybrid, same targets)": ci(mats["llm/ask_first/hybrid"][:, -1] - mats["rule/ask_first/hybrid"][:n_llm, -1]),
        "llm_minus_rule (recommend at once, hybrid, same targets)": ci(mats["llm/recommend_at_once/hybrid"][:, -1] - mats["rule/recommend_at_once/hybrid"][:n_llm, -1]),
        "llm_prefill_minus_no_prefill (ask first, hybrid)": ci(mats["llm/ask_first/hybrid"][:, -1] - mats["llm_no_prefill/ask_first/hybrid"][:, -1]),
    }
    dia["llm"] = {"targets": n_llm, "replies": n_llm_msgs, "seconds_per_reply": round(llm_s / max(n_llm_msgs, 1), 2),
                  "model": lm.name, "max_new_tokens": 30, "prefill": llm_sim.prefill}
    fails = [lg for lg in logs["llm/ask_first/hybrid"] if lg.found_at is None][:2]
    fails += [lg for lg in logs["rule/ask_first/hybrid"] if lg.found_at is None][:1]
    dia["examples"] = [{"target": lg.target.title, "turns": [{"user": t["user"], "leak": t["leak"], "action": t["action"],
                                                              "agreement": t["agreement"]} for t in lg.turns]}
                       for lg in fails]
    res["dialogues"] = dia

    # ---------------------------------------------------------------- A/B test sizing from the measured rates
    p_a = float(mats["rule/recommend_at_once/hybrid"][:, -1].mean())
    p_b = float(mats["rule/ask_first/hybrid"][:, -1].mean())
    ab = {"arm_a": "recommend at once (rule, hybrid) success@5", "arm_b": "ask first (rule, hybrid) success@5",
          "p_a": round(p_a, 4), "p_b": round(p_b, 4)}
    if 0 < p_a < 1 and 0 < p_b < 1 and p_a != p_b:
        ab["power"] = {str(n): round(tm.power_two_proportions(p_a, p_b, n), 4) for n in (100, 300, 1000, 3000, 10000)}
        ab["n_per_arm_for_80pct_power"] = tm.sample_size_two_proportions(p_a, p_b, power=0.8)
    looks, n_arm = 10, 1000
    aa = tm.aa_peeking_false_positive_rate(p_a if 0 < p_a < 1 else 0.5, n_arm, looks=looks, n_tests=2000 if not args.quick else 300,
                                           seed=args.seed)
    ab["aa"] = {"rate": round(p_a, 4), "n_per_arm": n_arm, "looks": looks, "tests": 2000 if not args.quick else 300,
                "fpr_one_look": [round(aa["fpr_final"], 4), *[round(x, 4) for x in aa["fpr_final_ci"]]],
                "fpr_peeking": [round(aa["fpr_peeking"], 4), *[round(x, 4) for x in aa["fpr_peeking_ci"]]]}
    res["ab_test"] = ab

    # ---------------------------------------------------------------- simulation vs offline ranking of systems
    systems = {"Random": RandomScores(seed=args.seed), "Popularity": Popularity(), "ItemKNN": knn, "UserKNN": UserKNN(),
               "BPR-MF": BPRMF()}
    sim_t = test_t if not args.quick else test_t[:20]
    sim_users = np.asarray([t.user for t in sim_t])
    sim_rows = {}
    for name, model in systems.items():
        if name != "ItemKNN":
            model.fit(split)
        offline, frame = metrics.evaluate(model, split, ks=(10,), per_user=True)
        frame = frame.set_index("user") if "user" in frame.columns else frame
        prior = D.catalog_scores(model, split, corpus, sim_users, [hist[u] for u in sim_users])
        it = iter(prior)
        w = {"retrieval": 0.0, "popularity": 1.0, "similar": 0.0}
        lg = D.run_dialogues(sim_t, rule, lambda t: D.Conductor(make_tools(None, w, next(it)), ask_budget=2, k=K), max_turns=T)
        m = D.success_matrix(lg, T)
        sel = frame.loc[frame.index.intersection(sim_users)] if hasattr(frame, "loc") else frame
        sim_rows[name] = {"offline_hr@10": round(float(sel["HR@10"].mean()), 4),
                          "offline_ndcg@10": round(float(sel["NDCG@10"].mean()), 4),
                          "simulated_success@5": rate(m[:, -1])}
    names = list(sim_rows)
    sim_succ = [sim_rows[n]["simulated_success@5"][0] for n in names]
    res["simulation"] = {
        "systems": sim_rows, "targets": len(sim_t),
        "kendall_tau_vs_hr@10": round(float(stats.kendalltau([sim_rows[n]["offline_hr@10"] for n in names], sim_succ).statistic), 4),
        "kendall_tau_vs_ndcg@10": round(float(stats.kendalltau([sim_rows[n]["offline_ndcg@10"] for n in names], sim_succ).statistic), 4),
        "note": "each system replaces popularity as the conductor's ranker inside the structured filter (retriever and fold-in off)"}
    print(f"simulation done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    # ---------------------------------------------------------------- recorded RAG and judge results
    res["rag"] = recorded("llm_rag", "python benchmarks/llm_rag.py", lambda d: {
        "recall@10": {k: v["recall@10"] for k, v in d["retrieval"].items()},
        "rerank_full_minus_before_ndcg@10": d["rerank"]["after_full_minus_before"],
        "free_out_of_catalog": d["generation"]["free_out_of_catalog"],
        "rag_out_of_catalog": d["generation"]["rag_out_of_catalog"], "seconds": d.get("seconds")})
    res["judge"] = recorded("llm_judge", "python benchmarks/llm_judge.py", lambda d: {
        "movies_position_bias_rate": d["movies"]["position_bias_rate"],
        "movies_accuracy_per_verdict": d["movies"]["accuracy_per_verdict"],
        "reviews_accuracy_per_verdict": d["reviews"]["accuracy_per_verdict"], "model": d.get("model")})
    res["seconds"] = round(time.perf_counter() - t_start, 1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "llm_conductor" + ("_quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=float) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(report(res, args.quick) + "\n", encoding="utf-8")
    print(report(res, args.quick))
    return 0


def report(res: dict, quick: bool) -> str:
    p, d, ab, sim = res["protocol"], res["dialogues"], res["ab_test"], res["simulation"]
    md = [f"# A conversational recommender and its simulated users (MovieLens-100k, {p['test_targets']} test targets)", "",
          f"`python benchmarks/llm_conductor.py{' --quick' if quick else ''}` ({res['seconds']:.0f} s, 1 thread). Seed "
          f"{p['seed']}; leave-one-out split, users cut in two halves: {p['valid_targets']} validation targets (fusion "
          f"weights {res['validation']['chosen_weights']} chosen on them only), {p['test_targets']} test targets. "
          f"{p['k']} films per list, at most {p['max_turns']} user messages; success@t = the target was shown within t "
          "turns. Rates with 95% Wilson intervals; differences paired over targets (bootstrap).", "",
          "## Success by turn", "",
          "| simulator / policy / retriever | n | success@1 | success@3 | success@5 | mean turns (successes) | leaks | messages agree / contradict / silent |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, r in d["systems"].items():
        ag = r.get("agreement")
        mt = r.get("mean_turns_to_success")
        md.append(f"| {key} | {r['n']} | {fmt(r['success@1'])} | {fmt(r['success@3'])} | {fmt(r['success@5'])} | "
                  f"{f'{mt[0]:.2f}' if mt and mt[0] == mt[0] else ''} | {r.get('title_leaks', '')} | "
                  + (f"{ag['agrees']:.2f} / {ag['contradicts']:.2f} / {ag['silent']:.2f}" if ag else "") + " |")
    w = res["validation"]["chosen_weights"]
    md += ["", "`list/*`: no dialogue; the next 5 films of a fixed ranked list per turn (HR@5t). Rows without "
           f"`w_ret=1` use the tuned fusion weights {w}" + (" (the retriever switched off: inside the structured "
           "filter it did not help on validation)" if not w["retrieval"] else "") + "; `w_ret=1` rows switch the "
           "retriever on to compare retrievers.", "",
           "| paired difference | mean [95% CI] |", "| --- | --- |"]
    md += [f"| {k} | {fmt(v)} |" for k, v in d["paired_success@5"].items()]
    llm = d["llm"]
    md += ["", f"LLM simulator: {llm['model']}, {llm['replies']} replies, {llm['seconds_per_reply']} s per reply "
           f"(batched, greedy, {llm['max_new_tokens']} new tokens, prefill {llm['prefill']!r}).", "",
           "## A/B test sizing (from the measured success@5 of the two policies)", "",
           f"{ab['arm_a']}: {ab['p_a']:.3f}; {ab['arm_b']}: {ab['p_b']:.3f}."]
    if "power" in ab:
        md += ["", "| users per arm | " + " | ".join(ab["power"]) + " |", "| --- |" + " --- |" * len(ab["power"]),
               "| power | " + " | ".join(f"{v:.2f}" for v in ab["power"].values()) + " |", "",
               f"{ab['n_per_arm_for_80pct_power']:,} users per arm for 80% power."]
    aa = ab["aa"]
    md += ["", f"A/A tests ({aa['tests']}, rate {aa['rate']:.3f}, {aa['n_per_arm']} users per arm): false positives "
           f"with one look {fmt(aa['fpr_one_look'])}, stopping at the first p < 0.05 of {aa['looks']} looks "
           f"{fmt(aa['fpr_peeking'])}.", "",
           f"## Simulated vs offline ranking of course recommenders ({sim['targets']} targets)", "",
           "| system | offline HR@10 | offline NDCG@10 | simulated success@5 (rule-based user, system as ranker) |",
           "| --- | --- | --- | --- |"]
    md += [f"| {n} | {r['offline_hr@10']:.3f} | {r['offline_ndcg@10']:.3f} | {fmt(r['simulated_success@5'])} |"
           for n, r in sim["systems"].items()]
    md += ["", f"Kendall's tau, simulated vs offline: {sim['kendall_tau_vs_hr@10']:+.2f} (HR@10), "
           f"{sim['kendall_tau_vs_ndcg@10']:+.2f} (NDCG@10).", "", "## Recorded, not re-run", ""]
    for key in ("rag", "judge"):
        r = res[key]
        body = {k: v for k, v in r.items() if k not in ("command", "file")}
        md.append(f"* **{key}** (`{r['command']}`, from `{r.get('file', 'missing')}`): " + json.dumps(body))
    md += ["", "## Failure examples", ""]
    for e in d["examples"]:
        md.append(f"* target *{e['target']}*: " + " / ".join(
            f"\"{t['user']}\"" + (" (leak)" if t["leak"] else "") + f" [{t['agreement']}; {t['action']}]" for t in e["turns"]))
    return "\n".join(md)


if __name__ == "__main__":
    raise SystemExit(main())
