"""``python -m course_lib.llm prepare``: get the LLM lessons' models ready, once, offline.

Checks that the weights packages are installed, converts SmolLM2's GGUF into a float
checkpoint in the course cache and embeds the MovieLens-100k catalog with MiniLM (cached),
so that no notebook, test or grading kernel pays for either (the grading sandbox sees the
cache read-only)."""
from __future__ import annotations

import sys
import time


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["prepare"]:
        print(__doc__)
        return 2
    from .models import ModelUnavailable, build_checkpoint, checkpoint_dir
    try:
        t = time.perf_counter()
        build_checkpoint(force="--force" in argv)
        print(f"SmolLM2-135M-Instruct: float checkpoint in {checkpoint_dir()} ({time.perf_counter() - t:.0f} s)")
        from .. import data, prep
        from .encoder import item_embeddings
        t = time.perf_counter()
        ml = data.load_movielens("ml-100k")
        emb = item_embeddings(prep.leave_one_out(ml.interactions), ml.items, progress=False)
        print(f"MiniLM: {len(emb) - 1} MovieLens-100k item embeddings cached ({time.perf_counter() - t:.0f} s)")
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
