"""A unique marker planted in the hidden tests reaches nothing a student receives;
an LMS zip export (several attempts, non-ASCII names) is collected by nbgrader's
zip_collect keeping each student's newest attempt."""
from __future__ import annotations

import json
import shutil
import sys
import uuid
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
from grading import assignment as asg  # noqa: E402
from grading import course as crs  # noqa: E402
from grading.autograde import grade_submission  # noqa: E402
from grading.runner import Limits  # noqa: E402

NAME = corpus.NAME
LIMITS = Limits(wall_s=60, cell_s=20, memory_mb=3072)


def test_marker_never_reaches_students(tmp_path):
    marker = f"HIDDEN-MARKER-{uuid.uuid4().hex}"
    root = tmp_path / "root"
    src = json.loads((ROOT / "solutions" / NAME / f"{NAME}.ipynb").read_text())
    for c in src["cells"]:
        text = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if "### BEGIN HIDDEN TESTS" in text:
            c["source"] = text.replace("### BEGIN HIDDEN TESTS", "### BEGIN HIDDEN TESTS\n"
                                       f"# {marker}\n_secret = {marker!r}\n"
                                       "_t = pd.DataFrame({'user': [1, 2, 3], 'item': [1, 2, 3], 'rating': [1.0, 2.0, 6.0]})\n"
                                       f"assert abs(describe(_t)['mean_rating'] - 3.0) < 1e-9, {marker + ' mean'!r}")
    (root / "solutions" / NAME).mkdir(parents=True)
    (root / "solutions" / NAME / f"{NAME}.ipynb").write_text(json.dumps(src))
    (root / "notebooks" / NAME).mkdir(parents=True)
    shutil.copy2(ROOT / "notebooks" / NAME / f"{NAME}.ipynb", root / "notebooks" / NAME / f"{NAME}.ipynb")
    a = asg.load(NAME, root)
    assert any(marker in line for line in a.hidden_lines())
    leak = corpus.add_cell(corpus.with_answer(corpus.WRONG_MEAN), '''
import linecache, sys, gc  # print everything the kernel still holds
print("LEAK", [v for v in linecache.cache.values()], getattr(sys, "last_value", None), In)
print("LEAK", {k: v for k, v in globals().items() if k.startswith("_")})
print("LEAK", [o for o in gc.get_objects() if isinstance(o, str) and "MARKER" in o][:5])
''')
    subs = {"correct": corpus._load("solution"), "wrong": corpus.with_answer(corpus.WRONG_MEAN), "leaker": leak}
    for who, nb in subs.items():
        folder = tmp_path / "sub" / who
        folder.mkdir(parents=True)
        (folder / f"{NAME}.ipynb").write_text(json.dumps(nb))
        r = grade_submission(a, folder, who, tmp_path / "out" / who, LIMITS, feedback_dir=tmp_path / "fb" / who)
        assert r["score"] == (1.0 if who == "correct" else 0.0), r
        fb = (tmp_path / "fb" / who / f"{NAME}.html").read_text(encoding="utf-8")
        assert marker not in fb, who
        assert marker not in json.dumps(r["tests"]) and marker not in " ".join(r["notes"])
    assert marker not in (root / "notebooks" / NAME / f"{NAME}.ipynb").read_text()


def test_lms_zip_export(tmp_path):
    course = tmp_path / "course"
    zpath = tmp_path / "export.zip"
    sol = json.dumps(corpus._load("solution"))
    blank = json.dumps(corpus._load("release"))
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr(f"{NAME}_Zoë Müller_attempt_2025-01-30-15-00-00_{NAME}.ipynb", blank)
        z.writestr(f"{NAME}_Zoë Müller_attempt_2025-02-01-09-30-00_{NAME}.ipynb", sol)   # newest: correct
        z.writestr(f"{NAME}_José Álvarez_attempt_2025-02-02-10-00-00_{NAME}.ipynb", sol)
        z.writestr(f"{NAME}_José Álvarez_attempt_2025-02-03-10-00-00_{NAME}.ipynb", blank)  # newest: blank
        z.writestr(f"{NAME}_李雷_attempt_2025-02-03-11-00-00_{NAME}.ipynb", sol)
    students = crs.collect_zip(NAME, zpath, course)
    assert students == sorted(["Zoë Müller", "José Álvarez", "李雷"]), students
    for s in students:
        files = list((course / "submitted" / s / NAME).glob("*.ipynb"))
        assert len(files) == 1, files
    zoe = (course / "submitted" / "Zoë Müller" / NAME / f"{NAME}.ipynb").read_text()
    jose = (course / "submitted" / "José Álvarez" / NAME / f"{NAME}.ipynb").read_text()
    assert "BEGIN SOLUTION" in zoe and "BEGIN SOLUTION" not in jose
