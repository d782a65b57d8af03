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
# The grader's sandbox runs slot k as uid COURSE_GRADER_UID + k and limits processes per uid:
# each xdist worker gets its own range of 100 uids, so two workers can grade at the same time
# without sharing a process limit or seeing each other's processes (read by grading.runner).
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # set in xdist workers only ("gw0", "gw1", ...)
if _worker.startswith("gw") and _worker[2:].isdigit():
    os.environ["COURSE_GRADER_UID"] = str(int(os.environ.get("COURSE_GRADER_UID", "61000")) + 100 * int(_worker[2:]))

TIERS = ("unit", "quality", "notebooks", "grading", "browser")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks (loadgroup), or they are ignored
def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
        if parts and parts[0] == "grading":
            # one test file per xdist worker (with --dist loadgroup): a file's module-scoped fixtures
            # (the corpus is graded once for all its tests) run once; different files run in
            # parallel, each worker with its own sandbox uids (above)
            item.add_marker(pytest.mark.xdist_group("grading-" + Path(str(item.fspath)).stem))
