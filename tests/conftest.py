import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tools` and `grading` are importable from the tests

os.environ.setdefault("MPLBACKEND", "Agg")
# pytest-xdist runs one worker per core, and each worker's notebooks start a kernel: one
# BLAS/torch thread each keeps the two from oversubscribing the cores (inherited by kernels).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

TIERS = ("unit", "notebooks", "grading", "browser")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks (loadgroup), or they are ignored
def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
        if parts and parts[0] == "grading":
            # the grader's sandbox uses fixed uids per slot: grading tests share one xdist worker
            # (with --dist loadgroup) so one test's check for leftover processes sees only its own
            item.add_marker(pytest.mark.xdist_group("grading"))
