"""course_lib: the reference implementations behind "From Transformers to Preferences".

The notebooks show each idea in a few lines; this package holds the tested version
that trains at full scale, on a CPU or a GPU.
"""
from .env import environment_report, fast_mode, get_device, on_colab, seed_everything
from .record import read_records, record, records

__version__ = "0.3.0"

__all__ = [
    "environment_report", "fast_mode", "get_device", "on_colab", "seed_everything",
    "record", "records", "read_records", "__version__",
]
