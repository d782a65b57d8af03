"""Record results so that tests and reports read them back from executed notebooks.

``record("ndcg@10", 0.051)`` shows one short line in the notebook and stores the
value in the cell's output under a dedicated MIME type. ``read_records(nb)`` reads
every recorded value back from an executed notebook (the last value wins), so no
test ever parses printed text.
"""
from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

MIME = "application/vnd.course-record+json"

_RECORDS: dict[str, Any] = {}


def _to_jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalars
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return v
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    raise TypeError(
        f"record() stores numbers, strings, booleans and lists/dicts of them; got {type(value).__name__}. "
        "Convert it first, e.g. float(x) or x.tolist()."
    )


def record(name: str, value: Any, show: bool = True) -> Any:
    """Record ``value`` under ``name``; returns the stored (JSON-friendly) value."""
    if not isinstance(name, str) or not name:
        raise ValueError("record(name, value): name must be a non-empty string")
    stored = _to_jsonable(value)
    _RECORDS[name] = stored
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            text = f"{name} = {stored:.4f}" if isinstance(stored, float) else f"{name} = {stored}"
            display({MIME: {name: stored}, "text/plain": f"[recorded] {text}" if show else ""}, raw=True)
    except ImportError:  # pragma: no cover
        pass
    return stored


def records() -> dict[str, Any]:
    """Values recorded in this process so far."""
    return dict(_RECORDS)


def read_records(notebook: str | Path | dict) -> dict[str, Any]:
    """Read every recorded value from an executed notebook (path or nbformat dict)."""
    if isinstance(notebook, (str, Path)):
        nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    else:
        nb = notebook
    found: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            if MIME in data:
                payload = data[MIME]
                if isinstance(payload, str):
                    payload = json.loads(payload)
                found.update(payload)
    return found
