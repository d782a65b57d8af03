"""The LLM as generator (notebooks 12-14), one summary file from the three recorded benchmarks.

    python benchmarks/llm_generators.py

Runs no model. It reads what these benchmarks recorded and writes their headline numbers,
each with the command that produced it, under the keys the course reports:

* ``zero_shot``, ``constrained``, ``position_bias``: ``benchmarks/llm_generator.py``
  (notebook 12: generated top-K lists grounded to the catalog, constrained decoding, the LLM
  as a ranker of given candidates);
* ``tallrec`` and ``p5``: ``benchmarks/llm_tuning.py`` (notebook 13);
* ``knowledge``: ``benchmarks/llm_knowledge.py`` (notebook 14).

Re-run a source benchmark first to refresh its part. Writes
benchmarks/results/llm_generators.json and llm_generators.md.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python benchmarks/{name}.py` first.")
    return json.loads(path.read_text(encoding="utf-8"))


def ci(v) -> str:
    """[mean, lo, hi] -> '0.123 [0.100, 0.150]'; a number -> '0.123'."""
    if isinstance(v, (list, tuple)) and len(v) == 3:
        return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def summarize() -> dict:
    gen, tun, kno = load("llm_generator"), load("llm_tuning"), load("llm_knowledge")
    gen_cmd = "python benchmarks/llm_generator.py " + " ".join(gen.get("argv", []))
    return {
        "zero_shot": {"source": gen_cmd, **gen["zero_shot"]},
        "constrained": {"source": gen_cmd, **gen["constrained"]},
        "position_bias": {"source": gen_cmd, **gen["position_bias"]},
        "tallrec": {"source": tun["command"], **tun["tallrec"]},
        "p5": {"source": tun["command"], **tun["p5"]},
        "knowledge": {"source": "python benchmarks/llm_knowledge.py", "protocol": kno["protocol"],
                      "sources": kno["knowledge"], "reference": kno["reference"]},
    }


def markdown(res: dict) -> str:
    z, c, t, k = res["zero_shot"], res["constrained"], res["tallrec"], res["knowledge"]
    lines = ["# The LLM as generator (SmolLM2-135M-Instruct): summary of notebooks 12-14", "",
             "Collected by `python benchmarks/llm_generators.py` from the recorded benchmarks named below; "
             "95% intervals in brackets.", "",
             f"## Prompting (notebook 12): `{z['source']}`", "",
             "| measure | value |", "| --- | --- |",
             f"| zero-shot: titles that ground to the catalog | {ci(z['valid_rate'])} |",
             f"| zero-shot: of which repeat the user's history | {ci(z['repeat_rate'])} |",
             f"| zero-shot: hallucinated | {ci(z['hallucination_rate'])} |",
             f"| constrained decoding: valid | {ci(c['valid_rate'])} |",
             f"| constrained decoding: HR@10 | {ci(c['hr10'])} |", "",
             f"## TALLRec (notebook 13): `{t['source']}`", "",
             "| shots | seed | LoRA AUC | zero-shot | prior (all data) | SASRec same shots | GRU4Rec same shots | peak RSS (MB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in t["runs"]:
        lines.append(f"| {r['shots']} | {r['seed']} | {ci(r['auc'])} | {ci(r['zero_shot_auc'])} | {ci(r['prior_auc'])} | "
                     f"{ci(r.get('sasrec_auc', float('nan')))} | {ci(r.get('gru4rec_auc', float('nan')))} | "
                     f"{r.get('peak_rss_mb', '')} |")
    lines += ["", f"## Knowledge injection (notebook 14): `{k['source']}`", "",
              "| adapter trained with | P@5 | R@5 | NDCG@5 | AvgPop@5 |", "| --- | --- | --- | --- | --- |"]
    for name, r in {**k["sources"], **k["reference"]}.items():
        lines.append(f"| {name} | {ci(r.get('p5', ''))} | {ci(r.get('r5', ''))} | {ci(r.get('ndcg5', ''))} | "
                     f"{ci(r.get('avgpop5', ''))} |")
    lines += ["", "Each source file's markdown (`llm_generator.md`, `llm_tuning.md`, `llm_knowledge.md`) has the "
              "full tables and what they show."]
    return "\n".join(lines) + "\n"


def main() -> int:
    res = summarize()
    (RESULTS / "llm_generators.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    md = markdown(res)
    (RESULTS / "llm_generators.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
