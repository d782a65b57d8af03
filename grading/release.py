"""Deprecated: the release tool moved to tools/release.py; run ``python -m tools.release``.
This file only forwards to it, for the scripts that still call ``grading/release.py``."""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python grading/release.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.release import *  # noqa: E402,F401,F403

if __name__ == "__main__":
    sys.exit(main())  # noqa: F405
