"""Device choice, seeding, fast mode, and recorded results."""
import json

import nbformat
import numpy as np
import pytest
import torch

import course_lib as cl
from course_lib.record import MIME, read_records


def test_device_auto_is_cpu_here_and_explicit_cuda_fails_clearly():
    dev = cl.get_device("auto")
    assert dev.type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        assert dev.type in {"cpu", "mps"}
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            cl.get_device("cuda")
    assert cl.get_device("cpu").type == "cpu"


def test_seed_everything_reproduces():
    cl.seed_everything(3)
    a = (np.random.rand(3), torch.rand(3))
    cl.seed_everything(3)
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_fast_mode(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    assert cl.fast_mode()
    monkeypatch.setenv("COURSE_FAST", "0")
    assert not cl.fast_mode()


def test_environment_report():
    r = cl.environment_report()
    assert r.torch == torch.__version__ and r.memory_gb > 0
    assert "<table>" in r._repr_html_()


def test_record_values_and_read_back(tmp_path):
    assert cl.record("ndcg@10", np.float32(0.25)) == 0.25
    assert cl.record("n", np.int64(3)) == 3
    assert cl.records()["ndcg@10"] == 0.25
    with pytest.raises(TypeError, match="record"):
        cl.record("bad", object())
    with pytest.raises(ValueError):
        cl.record("", 1)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", data={MIME: {"a": 1}, "text/plain": "a"}),
                    nbformat.v4.new_output("display_data", data={MIME: {"a": 2, "b": [1, 2]}})]
    nb.cells.append(cell)
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    assert read_records(path) == {"a": 2, "b": [1, 2]}
