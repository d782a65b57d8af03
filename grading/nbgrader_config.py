"""nbgrader configuration of the course: solutions/ is nbgrader's "source", notebooks/ its "release".

Loaded by every grading command (``tools/release.py``, the instructor's grading
command) with this folder as nbgrader's working directory.
"""
import os
from pathlib import Path

c = get_config()  # noqa: F821 - provided by traitlets when this file is loaded

ROOT = Path(__file__).resolve().parent.parent

c.CourseDirectory.course_id = "transformers-to-preferences"
c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.db_url = os.environ.get("COURSE_GRADEBOOK_URL", f"sqlite:///{ROOT / 'grading' / 'gradebook.db'}")
# Only notebooks are part of an assignment; caches and checkpoints are not.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]

# What students see in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Graded notebooks run in fast mode (COURSE_FAST=1 is set by the grading commands),
# so no cell should come near this; it protects the batch from a runaway cell.
c.ExecutePreprocessor.timeout = 120
c.Execute.kernel_name = "python3"
