"""The student release is generated from solutions/ and committed: it must be up to date."""
import json
from pathlib import Path

from grading import release

ROOT = Path(__file__).resolve().parents[2]


def test_notebooks_are_up_to_date_with_solutions():
    problems = release.check()
    assert not problems, "\n".join(problems) + "\nRun `make release`."


def test_release_has_no_solutions_or_hidden_tests():
    for path in ROOT.glob("notebooks/*/*.ipynb"):
        text = path.read_text(encoding="utf-8")
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"{path}: contains {marker}"
        nb = json.loads(text)
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{path}: has outputs"


def test_normalise_is_idempotent():
    for path in ROOT.glob("notebooks/*/*.ipynb"):
        text = path.read_text(encoding="utf-8")
        assert release.dumps(release.normalise(json.loads(text))) == text
