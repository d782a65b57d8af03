"""Execute a prepared notebook with its kernel in the sandbox (see sandbox.py).

nbclient runs here, in the grader's own process; the kernel runs sandboxed. This run makes
the student's feedback: it gets the notebook with its *visible* tests only (no hidden test
ever runs in it). For each cell we keep the kernel's execution reply status, which gives the
messages shown to the student; the kernel is the student's, so the points never come from
it: they come from the grading run (verdict.py), a separate process the submission does not
control.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_PY = Path(__file__).resolve().parent / "sandbox.py"
BASE_UID = int(os.environ.get("COURSE_GRADER_UID", "61000"))  # slot k runs as uid BASE_UID + k


@dataclass
class Limits:
    """Per-submission limits. Defaults suit the course's notebooks in fast mode."""
    wall_s: float = 300.0      # the whole notebook
    cell_s: float = 120.0      # one cell (then the kernel is interrupted)
    memory_mb: int = 6144      # address space of the kernel (torch alone maps ~1.5 GB)
    nproc: int = 256           # processes and threads of the slot's uid
    file_mb: int = 256         # largest file the kernel may write
    tmp_mb: int = 512          # size of the kernel's private /tmp
    output_kb: int = 256       # output kept per cell (more is cut off)
    nofile: int = 1024

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CellRun:
    status: str = "not run"   # ok | error | timeout | not run | dead
    ename: str = ""
    evalue: str = ""


@dataclass
class RunResult:
    nb: dict
    cells: dict = field(default_factory=dict)   # cell index -> CellRun
    seconds: float = 0.0
    problem: str = ""          # why the run stopped early, if it did
    sandbox: str = ""          # "full" or "degraded: ..."


def sandbox_support() -> tuple[bool, str]:
    """Can we use namespaces here? (root + unshare working)"""
    if os.environ.get("COURSE_GRADER_NO_NAMESPACES") == "1":
        return False, "degraded: namespaces turned off by COURSE_GRADER_NO_NAMESPACES=1"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "degraded: not root, so no namespaces and no separate user (resource limits only)"
    if shutil.which("unshare") is None:
        return False, "degraded: no unshare command"
    try:
        p = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "true"], capture_output=True, timeout=20)
    except Exception as exc:  # pragma: no cover
        return False, f"degraded: unshare failed ({exc})"
    if p.returncode != 0:
        return False, f"degraded: unshare failed ({p.stderr.decode(errors='replace').strip()})"
    return True, "full"


_SUPPORT = None


def support() -> tuple[bool, str]:
    global _SUPPORT
    if _SUPPORT is None:
        _SUPPORT = sandbox_support()
    return _SUPPORT


def kernel_env(workdir: str, data_dir: str | None) -> dict:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "COURSE_FAST": "1", "COURSE_GRADING": "1",
        "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
        "IPYTHONDIR": f"{workdir}/.ipython", "MPLCONFIGDIR": f"{workdir}/.mpl",
        "JUPYTER_PLATFORM_DIRS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }
    if data_dir:
        env["COURSE_DATA_DIR"] = data_dir
    return env


def hidden_paths(extra: list[str]) -> list[str]:
    """What the kernel must not see (covered by empty file systems)."""
    hide = [ROOT / "solutions", ROOT / "grading", ROOT / ".git", ROOT / "tests", ROOT / "benchmarks",
            ROOT / "build", ROOT / "reports", Path("/root"), Path("/home"), Path("/var/tmp"), Path("/dev/shm"),
            Path("/tmp")]
    return [str(p) for p in hide] + [str(Path(p).resolve()) for p in extra]


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command is wrapped by the sandbox launcher."""

    sandbox_spec_path: str = ""
    use_namespaces: bool = True

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file,
               "--HistoryManager.enabled=False", "--IPKernelApp.log_level=CRITICAL"]
        inner = [sys.executable, "-I", str(SANDBOX_PY), self.sandbox_spec_path, "--", *cmd]
        if self.use_namespaces:
            return ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc", *inner]
        return inner


class KernelHung(Exception):
    """A cell timed out, the kernel was interrupted, and the next cell timed out too."""


class GraderClient(NotebookClient):
    """nbclient that records each cell's reply status and caps the output kept."""

    def __init__(self, *a, output_kb: int = 256, **kw):
        super().__init__(*a, **kw)
        self.replies: dict[int, CellRun] = {}
        self._timeouts = 0
        self.output_cap = output_kb * 1024
        self._out_size: dict[int, int] = {}

    async def _check_raise_for_error(self, cell, cell_index, exec_reply):
        content = (exec_reply or {}).get("content", {})
        status = content.get("status", "error")
        run = CellRun(status="ok" if status == "ok" else "error",
                      ename=str(content.get("ename", ""))[:200], evalue=str(content.get("evalue", ""))[:2000])
        if content.get("ename") == "CellTimeoutError":
            run.status = "timeout"
        else:
            self._timeouts = 0
        self.replies[cell_index] = run
        # never raise: every cell of the notebook is run (allow_errors semantics)

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        g = cell.get("metadata", {}).get("grader", {})
        role = g.get("role")
        if role == "hidden":
            # hidden tests only run after the visible test passed (otherwise the score is 0 anyway)
            vis = [i for i, c in enumerate(self.nb.cells[:cell_index])
                   if c.get("metadata", {}).get("grader", {}) == {"role": "visible", "grade_id": g.get("grade_id")}]
            if not vis or self.replies.get(vis[-1], CellRun()).status != "ok":
                self.replies[cell_index] = CellRun(status="skipped")
                return cell
        if role in ("guard", "check", "hidden", "scrub"):
            store_history = False  # the grader's own cells leave no trace in In/Out
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    async def _async_handle_timeout(self, timeout, cell=None):
        self._timeouts += 1
        if self._timeouts >= 2:  # interrupted, yet still busy: the kernel ignores interrupts
            raise KernelHung()
        return await super()._async_handle_timeout(timeout, cell)

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        total = self._out_size.get(cell_index, 0) + size
        self._out_size[cell_index] = total
        if total > self.output_cap:
            if total - size <= self.output_cap:  # first time over: leave a note
                outs.append({"output_type": "stream", "name": "stdout",
                             "text": f"\n[grader: output cut off after {self.output_cap // 1024} KB]\n"})
            return None
        return super().output(outs, msg, display_id, cell_index)


def prepare_sandbox(stage: Path, slot: int, limits: Limits, data_dir: str | None = None,
                    hide_extra: list[str] | None = None):
    """A fresh private folder (``comm``, shared with the sandboxed process) and the sandbox's spec.
    Returns (base folder to delete afterwards, comm, spec path, namespaces used?, sandbox description)."""
    use_ns, how = support()
    base = Path(tempfile.mkdtemp(prefix=f"grading-slot{slot}-"))
    os.chmod(base, 0o711)
    comm = base / "comm"
    comm.mkdir()
    workdir = "/tmp/work" if use_ns else str(stage)
    uid = BASE_UID + slot if (hasattr(os, "geteuid") and os.geteuid() == 0) else None
    if data_dir is None:
        from course_lib.data import cache_dir
        data_dir = str(cache_dir())
    keep = [[str(comm), False]]
    # the interpreter and its environment may live under a hidden folder (e.g. ~/.pyenv)
    for prefix in {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}:
        keep.append([str(prefix), True])
    # course_lib itself, wherever it is installed from (an editable install points into the
    # course checkout, which may sit under a hidden folder such as /tmp)
    import course_lib
    keep.append([str(Path(course_lib.__file__).resolve().parent), True])
    if data_dir:
        keep.append([str(Path(data_dir).resolve()), True])
    spec = {"uid": uid, "namespaces": use_ns, "stage": str(stage), "workdir": workdir, "comm": str(comm),
            "hide": hidden_paths(hide_extra or []), "keep": keep, "tmp_mb": limits.tmp_mb,
            "limits": {"memory_mb": limits.memory_mb, "nproc": limits.nproc, "file_mb": limits.file_mb,
                       "cpu_s": int(limits.wall_s * 2) + 10, "nofile": limits.nofile},
            "env": kernel_env(workdir, str(Path(data_dir).resolve()) if data_dir else None)}
    spec_path = base / "spec.json"
    spec_path.write_text(json.dumps(spec))
    if not use_ns and uid is not None:
        os.chown(stage, uid, uid)
    return base, comm, spec_path, use_ns, how


def execute(nb: dict, stage: Path, slot: int, limits: Limits, data_dir: str | None = None,
            hide_extra: list[str] | None = None) -> RunResult:
    """Run ``nb`` (nbformat dict) in a sandbox whose working folder is a copy of ``stage``."""
    import nbformat

    t0 = time.monotonic()
    base, comm, spec_path, use_ns, how = prepare_sandbox(stage, slot, limits, data_dir, hide_extra)
    node = nbformat.from_dict(nb)
    km = SandboxKernelManager(kernel_name="python3", transport="ipc", ip=str(comm / "k"),
                              connection_file=str(comm / "kernel.json"))
    km.sandbox_spec_path = str(spec_path)
    km.use_namespaces = use_ns
    client = GraderClient(node, km=km, timeout=int(limits.cell_s), allow_errors=True,
                          interrupt_on_timeout=True, startup_timeout=120,
                          error_on_timeout={"ename": "CellTimeoutError",
                                            "evalue": f"the cell ran longer than {int(limits.cell_s)} s",
                                            "traceback": []},
                          record_timing=False, output_kb=limits.output_kb, kernel_name="python3",
                          resources={"metadata": {"path": str(comm)}})
    problem = ""

    async def run():
        return await client.async_execute(cleanup_kc=True)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(run(), timeout=limits.wall_s))
    except asyncio.TimeoutError:
        problem = f"the notebook ran longer than the {int(limits.wall_s)} s limit for a whole submission"
    except KernelHung:
        problem = (f"a cell ran past the {int(limits.cell_s)} s limit and the kernel did not stop when "
                   "interrupted (an endless loop that catches KeyboardInterrupt?)")
    except DeadKernelError:
        problem = "the kernel died (the code exited, crashed, or ran out of memory)"
    except Exception as exc:  # kernel failed to start, protocol error...
        problem = f"the notebook could not be run: {type(exc).__name__}: {str(exc)[:300]}"
    finally:
        import atexit
        atexit.unregister(client._cleanup_kernel)
        try:
            loop.run_until_complete(_shutdown(km))
        except Exception:
            pass
        loop.close()
        shutil.rmtree(base, ignore_errors=True)
    return RunResult(nb=json.loads(json.dumps(node)), cells=client.replies, seconds=time.monotonic() - t0,
                     problem=problem, sandbox=how)


async def _shutdown(km: AsyncKernelManager) -> None:
    if km.has_kernel:
        try:
            await asyncio.wait_for(km.shutdown_kernel(now=True), timeout=10)
        except Exception:
            pass
    if km.has_kernel and km.provisioner is not None:
        await km.provisioner.kill()
