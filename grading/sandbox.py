"""Run one student's kernel in a throwaway sandbox.

The grader (trusted, the instructor's process) drives the notebook with nbclient;
only the *kernel*, where the student's code runs, lives in the sandbox:

* its own network namespace (no network at all: the kernel talks to the grader
  over ZeroMQ ``ipc`` sockets, i.e. files, not TCP);
* its own mount namespace, where the solutions, the gradebook, the instructor's
  course folder, ``.git``, the tests, every other student's folder, ``/root``,
  ``/home`` and the whole of ``/tmp`` are covered by empty file systems; the
  kernel works in a fresh size-limited ``/tmp/work`` holding only the release-side
  files and this one submission;
* its own PID namespace: when the grader kills the kernel, every process it forked
  dies with it;
* an unprivileged user (a dedicated uid per parallel slot), no new privileges;
* resource limits: address space (memory), processes, file size, CPU seconds,
  open files; the wall clock is enforced by the grader.

When the operating system does not allow namespaces (not root, macOS, a locked
down container), the kernel still gets the resource limits and the report says
the sandbox was degraded.

This file is also the tiny program that runs as root *inside* the new namespaces
(``python -I sandbox.py SPEC.json -- kernel argv``): it sets up the mounts, the
limits and the user, then execs the kernel. It must not import anything of the
course (it runs before the student's kernel, with ``-I``).
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 1, 2, 4, 32, 4096


def _bind(fd: int, target: str, read_only: bool) -> None:
    """Bind-mount an already opened folder (O_PATH fd) onto ``target``, with the mount(2) call itself:
    the mount command would resolve /proc/self/fd/N to a path that is covered by now."""
    libc = ctypes.CDLL(None, use_errno=True)
    src = f"/proc/self/fd/{fd}".encode()
    if libc.mount(src, target.encode(), None, MS_BIND, None) != 0:
        raise SystemExit(f"sandbox: bind {target} failed: {os.strerror(ctypes.get_errno())}")
    if read_only:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
        if libc.mount(b"none", target.encode(), None, flags, None) != 0:
            raise SystemExit(f"sandbox: read-only {target} failed: {os.strerror(ctypes.get_errno())}")


def _mount(*args: str) -> None:
    p = subprocess.run(["mount", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"sandbox: mount {' '.join(args)} failed: {p.stderr.strip()}")


def _setup_mounts(spec: dict) -> None:
    """Cover everything secret; re-expose only what the kernel needs."""
    keep = []  # (fd, path, read_only): opened before anything is covered
    for path, ro in spec["keep"]:
        if os.path.exists(path):
            keep.append((os.open(path, os.O_PATH), path, ro))
    stage_fd = os.open(spec["stage"], os.O_PATH)
    for path in spec["hide"]:
        if os.path.isdir(path) and not os.path.islink(path):
            size = spec["tmp_mb"] if path == "/tmp" else 1
            mode = "1777" if path == "/tmp" else "755"
            _mount("-t", "tmpfs", "-o", f"size={size}m,mode={mode},nosuid,nodev", "tmpfs", path)
        elif os.path.isfile(path):
            _mount("--bind", "/dev/null", path)
    for fd, path, ro in keep:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(path, exist_ok=True)
        _bind(fd, path, ro)
    # The working folder: a copy of the staged files inside the fresh /tmp.
    work = spec["workdir"]
    shutil.copytree(f"/proc/self/fd/{stage_fd}", work, symlinks=False, dirs_exist_ok=True)
    for fd, _, _ in keep:
        os.close(fd)
    os.close(stage_fd)


def _chown_tree(path: str, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, uid)
        for f in filenames:
            os.chown(os.path.join(dirpath, f), uid, uid, follow_symlinks=False)


def _set_limits(lim: dict) -> None:
    def setl(res, value):
        if value:
            resource.setrlimit(res, (int(value), int(value)))

    setl(resource.RLIMIT_AS, lim.get("memory_mb", 0) * 2**20)
    setl(resource.RLIMIT_NPROC, lim.get("nproc", 0))
    setl(resource.RLIMIT_FSIZE, lim.get("file_mb", 0) * 2**20)
    setl(resource.RLIMIT_CPU, lim.get("cpu_s", 0))
    setl(resource.RLIMIT_NOFILE, lim.get("nofile", 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def main(argv: list[str]) -> None:
    """Entry point inside the namespaces: ``sandbox.py SPEC.json -- KERNEL ARGV``."""
    spec_path, sep, *kernel = argv
    assert sep == "--" and kernel, "usage: sandbox.py SPEC.json -- kernel argv"
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    uid = spec["uid"]
    if spec.get("namespaces"):
        subprocess.run(["ip", "link", "set", "lo", "up"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _setup_mounts(spec)
        workdir = spec["workdir"]
    else:
        workdir = spec["stage"]
    if os.geteuid() == 0 and uid is not None:
        _chown_tree(workdir, uid)
        _chown_tree(spec["comm"], uid)
    os.chdir(workdir)
    if spec.get("namespaces") and os.getpid() == 1:
        # Stay as the namespace's init (root, out of the kernel's reach): reap orphans, and
        # exit when the kernel exits, which kills whatever it left behind. The kernel is an
        # ordinary process, so it can kill itself like anywhere else.
        import signal
        child = os.fork()
        if child:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            while True:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    os._exit(0)
                if pid == child:
                    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _set_limits(spec["limits"])
    if os.geteuid() == 0 and uid is not None:
        _drop_privileges(uid)
    env = dict(spec["env"])
    env["HOME"] = workdir
    os.execve(kernel[0], kernel, env)


if __name__ == "__main__":
    main(sys.argv[1:])
