"""The library guard shared by the feedback run (guard.py) and the grading run (verdict_main.py)."""
import builtins
import sys

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell

from grading import guard, snapshot


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    yield sh
    InteractiveShell.clear_instance()


def test_untouched_state_restores_nothing(shell):
    check = snapshot.snapshot(shell.user_ns, shell)
    assert check() == []


def test_patched_library_function_is_put_back_and_named(shell):
    check = snapshot.snapshot(shell.user_ns, shell)
    genuine = np.allclose
    np.allclose = lambda *a, **k: True
    try:
        assert "numpy.allclose" in check()
        assert np.allclose is genuine
        assert check() == []  # restored once, clean afterwards
    finally:
        np.allclose = genuine


def test_shadowed_builtin_rebound_alias_and_added_method(shell):
    ns = shell.user_ns
    ns["np"] = np
    check = snapshot.snapshot(ns, shell)
    ns["len"] = lambda x: 3
    ns["np"] = object()
    type(shell).run_cell_forged = lambda self, *a: None
    fixed = check()
    assert "the name 'len' (shadows a builtin)" in fixed and "len" not in ns
    assert "the name 'np' (should be numpy)" in fixed and ns["np"] is np
    assert any("run_cell_forged (added)" in f for f in fixed)
    assert not hasattr(type(shell), "run_cell_forged")


def test_patched_builtins_module_compared_with_the_snapshot(shell):
    check = snapshot.snapshot(shell.user_ns, shell)
    genuine = builtins.isinstance
    builtins.isinstance = lambda *a: True
    try:
        assert "builtins.isinstance" in check()
        assert builtins.isinstance is genuine
    finally:
        builtins.isinstance = genuine


def test_tracer_is_removed_and_named(shell):
    check = snapshot.snapshot(shell.user_ns, shell)
    previous = sys.gettrace()
    sys.settrace(lambda *a: None)
    try:
        assert "a tracer or profiler" in check()
        assert sys.gettrace() is None
    finally:
        sys.settrace(previous)


def test_system_modules_guarded_only_when_asked(shell):
    genuine = sys.getrecursionlimit
    kernel_check = snapshot.snapshot(shell.user_ns, shell)
    grading_check = snapshot.snapshot(shell.user_ns, shell, system=True)
    sys.getrecursionlimit = lambda: 10**9
    try:
        assert "sys.getrecursionlimit" not in kernel_check()
        assert "sys.getrecursionlimit" in grading_check()
        assert sys.getrecursionlimit is genuine
    finally:
        sys.getrecursionlimit = genuine


def test_kernel_guard_cell_raises_and_keeps_its_code_private(shell):
    """The SNAPSHOT cell leaves only the check function and the exception class in the notebook."""
    before = set(shell.user_ns)
    shell.run_cell(guard.SNAPSHOT)
    added = set(shell.user_ns) - before
    assert {n for n in added if not n.startswith("_i") and n not in ("_", "__", "___")} \
        == {"__grader_check", "__GraderTampering"}
    shell.user_ns["__grader_check"]("t1")  # nothing touched: no exception
    genuine = np.isclose
    np.isclose = lambda *a, **k: True
    try:
        with pytest.raises(Exception, match="before t2: restored .*numpy.isclose"):
            shell.user_ns["__grader_check"]("t2")
        assert np.isclose is genuine
    finally:
        np.isclose = genuine
