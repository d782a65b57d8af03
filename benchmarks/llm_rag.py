"""Retrieval-augmented recommendation on MovieLens-100k: retrievers, LLM re-ranking, out-of-catalog rates.

    python benchmarks/llm_rag.py            # full run (~10 min on 2 loaded CPU cores)
    python benchmarks/llm_rag.py --quick    # a smoke run

Protocol (notebook 15's, with more requests and another seed): the catalog's 1,682 verbalized
items are the corpus. Requests with known answers come from metadata (one or two genres and a
decade, optionally "like <film>", literal or paraphrased wording; 3-30 answers each);
validation and test requests use disjoint (genres, decade) combinations. The hybrid's lexical
weight is chosen on the validation requests only (RRF and min-max mixing both reported). Test:
recall@10 and recall@50 per retriever; NDCG@10 of the best hybrid's top-20 in retrieval order vs
re-ranked by SmolLM2-135M-Instruct's likelihood of each candidate (full text, or title and year
only); the out-of-catalog rate of free generation (greedy, 16 new tokens, grounded with rapidfuzz)
vs RAG's re-ranked first item on the same requests. Means over requests with 95% bootstrap
intervals; differences paired over requests.

Writes benchmarks/results/llm_rag.json and llm_rag.md.
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
    ap.add_argument("--valid", type=int, default=60)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--rerank", type=int, default=30, help="test requests the LLM re-ranks")
    ap.add_argument("--generate", type=int, default=24, help="test requests answered by free generation")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.valid, args.test, args.candidates, args.rerank, args.generate = 12, 30, 8, 3, 3
    import torch
    torch.set_num_threads(args.threads)
    from course_lib import data
    from course_lib.llm import conductor as C
    from course_lib.llm.models import load_lm

    t_start = time.perf_counter()
    ml = data.load_movielens("ml-100k")
    corpus = C.catalog_corpus(ml.items, ml.interactions.groupby("item").size())
    valid_q, test_q = C.query_sets(corpus, args.valid, args.test, seed=args.seed)
    bm25, dense = C.BM25Retriever(corpus), C.DenseRetriever(corpus)
    res: dict = {"protocol": {"catalog": len(corpus), "valid_queries": len(valid_q), "test_queries": len(test_q),
                              "seed": args.seed, "candidates": args.candidates,
                              "paraphrased_test_share": round(float(np.mean([q.style == "paraphrase" for q in test_q])), 3)}}

    # ---------------------------------------------------------------- retrieval
    retrievers = {"bm25": bm25, "dense": dense}
    valid_best = {}
    for method in ("rrf", "minmax"):
        w, curve = C.tune_weight(bm25, dense, valid_q, k=10, method=method)
        retrievers[f"hybrid_{method}"] = C.HybridRetriever(bm25, dense, w, method)
        valid_best[f"hybrid_{method}"] = float(curve["recall@10"].max())
        res.setdefault("hybrid_weights", {})[method] = {"weight": w, "validation_curve": curve.round(4).to_dict("list")}
    style = np.array([q.style for q in test_q])
    rec, lists = {}, {}
    for name, r in retrievers.items():
        lists[name] = C.search_queries(r, test_q, 50)
        rec[name] = {}
        for k in (10, 50):
            v = C.per_query(lists[name], test_q, k)
            rec[name][f"recall@{k}"] = ci(v)
            if k == 10:
                rec[name]["recall@10_literal"] = ci(v[style == "literal"])
                rec[name]["recall@10_paraphrase"] = ci(v[style == "paraphrase"])
        hits = C.constraint_hits(lists[name], test_q, corpus, 10).mean()
        rec[name]["top10_meets"] = {k: round(float(v), 4) for k, v in hits.items()}
    base = C.constraint_hits([corpus.ids] * len(test_q), test_q, corpus, len(corpus)).mean()
    res["retrieval"] = rec
    res["retrieval_base_rate"] = {k: round(float(v), 4) for k, v in base.items()}
    res["recall_ceiling"] = {f"recall@{k}": round(float(C.recall_ceiling(test_q, k).mean()), 4) for k in (10, 50)}
    best = max(valid_best, key=valid_best.get)  # chosen on validation requests, like the weights
    d = C.per_query(lists[best], test_q, 10) - C.per_query(lists["dense"], test_q, 10)
    res["hybrid_minus_dense_recall@10"] = {"hybrid": best, "paired": ci(d)}
    print(f"retrieval done ({time.perf_counter() - t_start:.0f} s); best hybrid on validation: {best}", flush=True)

    # ---------------------------------------------------------------- RAG re-ranking
    lm = load_lm(threads=args.threads)
    rq = test_q[: args.rerank]
    retrieved = C.search_queries(retrievers[best], rq, args.candidates)
    t0 = time.perf_counter()
    full = C.rerank(lm, [q.text for q in rq], retrieved, corpus, text="full", threads=args.threads)
    s_per_q = (time.perf_counter() - t0) / len(rq)
    title = C.rerank(lm, [q.text for q in rq], retrieved, corpus, text="title", threads=args.threads)
    guard_ok = all(C.only_retrieved(a, b) == [int(i) for i in a] for m in (full, title) for a, b in zip(m, retrieved))
    before = C.per_query(retrieved, rq, 10, "ndcg")
    after_full, after_title = C.per_query(full, rq, 10, "ndcg"), C.per_query(title, rq, 10, "ndcg")
    res["rerank"] = {"queries": len(rq), "retriever": best, "ndcg@10_before": ci(before),
                     "ndcg@10_after_full_text": ci(after_full), "ndcg@10_after_title_only": ci(after_title),
                     "after_full_minus_before": ci(after_full - before),
                     "after_title_minus_before": ci(after_title - before),
                     "recall@20_of_retrieval": ci(C.per_query(retrieved, rq, args.candidates)),
                     "seconds_per_query": round(s_per_q, 2), "only_retrieved_ids": guard_ok}
    print(f"re-ranking done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    # ---------------------------------------------------------------- free generation vs RAG
    gq = rq[: args.generate]
    t0 = time.perf_counter()
    free = C.free_generation(lm, gq, corpus, max_new_tokens=16, threads=args.threads)
    gen_s = (time.perf_counter() - t0) / len(gq)
    rag_top1 = [C.only_retrieved(row, ret)[:1] for row, ret in zip(full[: len(gq)], retrieved[: len(gq)])]
    rag_ids = [r[0] if r else C.NO_ITEM for r in rag_top1]
    res["generation"] = {
        "queries": len(gq),
        "free_out_of_catalog": ci([a.item == C.NO_ITEM for a in free]),
        "rag_out_of_catalog": ci([i not in corpus.position for i in rag_ids]),
        "free_fits_request": ci([a.fits for a in free]),
        "rag_top1_fits_request": ci([i in q.answers for i, q in zip(rag_ids, gq)]),
        "seconds_per_answer": round(gen_s, 2),
        "examples": [{"request": a.request, "generated": a.generated, "title": a.title,
                      "grounded": corpus.title_of(a.item) if a.item != C.NO_ITEM else None,
                      "rag_top1": corpus.title_of(i)} for a, i in zip(free[:8], rag_ids[:8])],
    }
    res["seconds"] = round(time.perf_counter() - t_start, 1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "llm_rag" + ("_quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")

    r, g, p = res["rerank"], res["generation"], res["protocol"]
    md = [f"# Retrieval-augmented recommendation (MovieLens-100k, {p['test_queries']} test requests)", "",
          f"`python benchmarks/llm_rag.py{' --quick' if args.quick else ''}` ({res['seconds']:.0f} s). Seed {p['seed']}; "
          f"{p['valid_queries']} validation requests (weights chosen on them only), {p['test_queries']} test requests "
          f"from disjoint (genres, decade) combinations, {p['paraphrased_test_share']:.0%} of them paraphrased. "
          "Mean [95% bootstrap CI] over requests.", "",
          "## Retrieval", "",
          "| retriever | recall@10 | recall@50 | recall@10 literal | recall@10 paraphrase | top 10: genres / decade / both |",
          "| --- | --- | --- | --- | --- | --- |"]
    for name, v in rec.items():
        label = name if not name.startswith("hybrid") else f"{name} (w={res['hybrid_weights'][name.split('_')[1]]['weight']:g})"
        m = v["top10_meets"]
        md.append(f"| {label} | {fmt(v['recall@10'])} | {fmt(v['recall@50'])} | {fmt(v['recall@10_literal'])} | "
                  f"{fmt(v['recall@10_paraphrase'])} | {m['genres']:.2f} / {m['decade']:.2f} / {m['both']:.2f} |")
    b = res["retrieval_base_rate"]
    md += [f"| (random catalog item) | | | | | {b['genres']:.2f} / {b['decade']:.2f} / {b['both']:.2f} |", "",
           f"Ceiling (answer sets larger than k): recall@10 {res['recall_ceiling']['recall@10']:.3f}, "
           f"recall@50 {res['recall_ceiling']['recall@50']:.3f}. {best} minus dense, recall@10, paired: "
           f"{fmt(res['hybrid_minus_dense_recall@10']['paired'])}.", "",
           f"## LLM re-ranking of the {best} top {p['candidates']} ({r['queries']} test requests, SmolLM2-135M-Instruct)", "",
           "| list | NDCG@10 | minus retrieval order (paired) |", "| --- | --- | --- |",
           f"| retrieval order | {fmt(r['ndcg@10_before'])} | |",
           f"| re-ranked, full text | {fmt(r['ndcg@10_after_full_text'])} | {fmt(r['after_full_minus_before'])} |",
           f"| re-ranked, title and year only | {fmt(r['ndcg@10_after_title_only'])} | {fmt(r['after_title_minus_before'])} |",
           "", f"Recall@{p['candidates']} of the re-ranked lists: {fmt(r['recall@20_of_retrieval'])}; "
           f"{r['seconds_per_query']} s per request on the CPU; every re-ranked list holds retrieved IDs only: "
           f"{r['only_retrieved_ids']}.", "",
           f"## Out of catalog ({g['queries']} test requests, the same for both)", "",
           "| answer | out of catalog | fits the request |", "| --- | --- | --- |",
           f"| free generation (greedy, 16 tokens, rapidfuzz grounding) | {fmt(g['free_out_of_catalog'])} | {fmt(g['free_fits_request'])} |",
           f"| RAG: re-ranked first item | {fmt(g['rag_out_of_catalog'])} | {fmt(g['rag_top1_fits_request'])} |", "",
           "| request | free generation | grounded to | RAG top 1 |", "| --- | --- | --- | --- |"]
    md += [f"| {e['request']} | {e['title'] or '(none)'} | {e['grounded'] or 'out of catalog'} | {e['rag_top1']} |"
           for e in g["examples"]]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
