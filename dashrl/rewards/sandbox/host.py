"""The parent side of the sandbox: start a run, collect what it says, kill it, clean up.

``run_python`` and ``run_tests`` (exported by the package) both go through ``_execute``: it writes
a job directory (a JSON spec, the program's files, and ``inside.py`` and ``cases.py`` copied from
this package), starts ``inside.py`` as the supervisor (under ``unshare`` in namespaces mode), feeds
stdin, reads stdout, stderr, the supervisor's status pipe and the harness's report pipe until the
status pipe closes, a cap is passed or the deadline comes, then kills the supervisor and everything
it started and deletes the job. The spec carries the limits and, in namespaces mode, the filesystem
plan worked out here from the interpreter's paths (``_filesystem_plan``: what to cover with tmpfs,
what to bind back). ``run_tests`` trusts only report lines that carry its nonce.
``isolation_mode`` probes once per process which mode this machine gives. Untrusted code never runs
in this process; what the sandbox isolates, and what it does not, is in the package docstring.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass

from dashrl.rewards.sandbox import cases, inside
from dashrl.rewards.sandbox.cases import plan_tests
from dashrl.rewards.sandbox.inside import SANDBOX_UID

NAMESPACES = "namespaces"
PROCESS_GROUP = "process-group"

_INSIDE_FILES = "/tmp/.dashrl"  # namespaces mode: the job files (read before the program runs)
_INSIDE_WORKDIR = "/tmp/sandbox"  # namespaces mode: the program's working directory, HOME and TMPDIR
_REPORT_CAP = 1 << 20  # bytes of harness reports kept; more stops the run like output_limit
_STDIN_CAP = 1 << 16  # stdin is written to a pipe before the program reads it: at most one pipe buffer
_SHIPPED = {"inside.py": inside.__file__, "cases.py": cases.__file__}  # copied into each job: name -> source


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. Defaults suit model-written functions with numpy/pandas imports.

    timeout_s:        seconds the run may take, startup included. Past it the parent looks at the run's processes
                      in /proc: it stops the run when they used timeout_s of CPU time in all, or none of them is
                      runnable (sleeping or blocked: waiting on itself); a run that only waited for a busy CPU
                      goes on, up to wall_factor x timeout_s of wall clock. Where /proc does not show them, the
                      wall clock alone decides at timeout_s. Either way the reason is "timeout".
    wall_factor:      the wall-clock cap as a multiple of timeout_s (a loaded machine slows a run this much at most)
    cpu_s:            CPU seconds per process (RLIMIT_CPU)
    memory_mb:        address space per process (RLIMIT_AS), MiB
    max_processes:    processes and threads (RLIMIT_NPROC)
    max_file_mb:      largest file written (RLIMIT_FSIZE); in namespaces mode also the size of /tmp (all files)
    max_output_bytes: stdout and stderr each; more stops the program
    """

    timeout_s: float = 10.0
    wall_factor: float = 5.0
    cpu_s: int = 10
    memory_mb: int = 1024
    max_processes: int = 16
    max_file_mb: int = 64
    max_output_bytes: int = 1 << 16

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {value}")
        if self.wall_factor < 1:
            raise ValueError(f"SandboxLimits.wall_factor must be at least 1, got {self.wall_factor}")


@dataclass(frozen=True)
class SandboxResult:
    """How one run ended.

    returncode: the program's exit code, -N when killed by signal N, None when it was stopped
                (timeout, output limit) or never started
    stdout, stderr: decoded output, each cut to max_output_bytes
    timed_out:  wall-clock timeout or CPU-time limit
    reason:     "exited" (any exit code), "signal", "timeout", "cpu_limit", "output_limit",
                "sandbox_error" (the sandbox failed to start the program; stderr says why)
    seconds:    wall-clock seconds of the run
    report:     what the test harness wrote on its report pipe (run_tests only)
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    reason: str
    seconds: float
    report: str = ""


@dataclass(frozen=True)
class TestRun:
    """Outcome of run_tests.

    cases:      number of cases in the test program
    passed:     cases the harness reported passed (nonce-checked)
    finished:   the harness reported it ran to the end
    exceptions: type names of the exceptions that failed cases or stopped the run, in order
    error_in:   "solution" or "tests" when a statement outside the cases raised and stopped the run
    sandbox:    how the process ended
    """

    cases: int
    passed: int
    finished: bool
    exceptions: tuple[str, ...]
    error_in: str | None
    sandbox: SandboxResult

    @property
    def all_passed(self) -> bool:
        return self.finished and self.passed == self.cases


# ------------------------------------------------------------------ the filesystem the program sees


def _is_root() -> bool:
    return os.geteuid() == 0


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _untraversable_ancestor(path: str) -> str | None:
    """The top-most directory above ``path`` that others (uid 65534) may not enter, if any."""
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:depth])
        try:
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                return ancestor
        except OSError:
            return None
    return None


_PATHS_SCRIPT = ("import json, os, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
                 "sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable)), *sys.path]))")


@functools.lru_cache(maxsize=8)
def _interpreter_paths(python: str) -> tuple[str, ...]:
    """The directories ``python -I`` reads from: its prefixes, its binary's directory and its sys.path."""
    try:
        found = subprocess.run([python, "-I", "-c", _PATHS_SCRIPT], capture_output=True, text=True, timeout=60,
                               check=True, env={"PATH": "/usr/bin:/bin"})
    except subprocess.SubprocessError as exc:
        raise OSError(f"cannot ask {python} for its paths: {exc}") from None
    paths = {os.path.realpath(p) for p in json.loads(found.stdout) if p}
    return tuple(sorted(p for p in paths if os.path.isdir(p)))


def _topmost(paths: list[str]) -> list[str]:
    """``paths`` without those inside another one of them."""
    return [p for p in paths if not any(_under(p, other) and p != other for other in paths)]


@functools.lru_cache(maxsize=8)
def _filesystem_plan(python: str, max_file_mb: int) -> tuple[tuple[tuple[str, str, bool], ...], tuple[str, ...]]:
    """Directories to cover with tmpfs (path, mount options, writable), and paths to bind back under them."""
    needed = _interpreter_paths(python)
    scratch_options = f"size={max_file_mb}m,mode=1777"
    scratch = [(p, scratch_options if p != "/run" else "size=1m,mode=755", True)
               for p in ("/tmp", "/dev/shm", "/run") if os.path.isdir(p)]
    private = {os.path.realpath(os.path.expanduser("~"))}
    if _is_root():
        private.update(a for a in map(_untraversable_ancestor, needed) if a)
    private = {p for p in private if os.path.isdir(p) and p != "/" and not any(_under(p, s) for s, _, _ in scratch)}
    hidden = _topmost([p for p, _, _ in scratch] + sorted(private))
    cover = tuple(entry for entry in scratch if entry[0] in hidden)
    cover += tuple((p, "size=1m,mode=755", False) for p in hidden if p in private)
    return cover, tuple(_topmost([p for p in needed if any(_under(p, h) for h in hidden)]))


# ------------------------------------------------------------------ one run: job, supervisor, pipes, kill


def _program_env(python: str, workdir: str) -> dict[str, str]:
    return {
        "PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "CUDA_VISIBLE_DEVICES": "",  # the device nodes are gone in namespaces mode; a hint in the fallback
    }


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _kill_tree(proc: subprocess.Popen, mode: str) -> None:
    """Kill the supervisor and everything it started, and reap the supervisor.

    namespaces: killing PID 1 of the namespace makes the kernel kill the rest; unshare exits once
    that is done. process-group: SIGTERM asks the supervisor (a child subreaper) to kill every
    descendant it has, then the group gets SIGKILL in case the supervisor itself was killed.
    """
    if mode == NAMESPACES:
        for pid in _children(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    elif proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _remove_tree(path: str) -> None:
    """Delete a run's job directory, including directories the program made unreadable to us."""
    if not _is_root():  # root needs no permission; others may meet a chmod 000 left by the program
        for parent, dirs, _ in os.walk(path):
            for name in dirs:
                child = os.path.join(parent, name)
                if not os.path.islink(child):
                    os.chmod(child, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _session_usage(session: int) -> tuple[float, bool] | None:
    """(CPU seconds used, any process runnable) of the processes in ``session``; None when /proc shows none.

    CPU time counts each live process (user + system) and the children it has reaped; runnable is state R
    (running or waiting for a CPU) or D (waiting for the disk).
    """
    tick = os.sysconf("SC_CLK_TCK")
    cpu, runnable, found = 0.0, False, False
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return None
    for pid in entries:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                raw = handle.read()
            fields = raw[raw.rindex(b")") + 2 :].split()  # fields 3.. of proc(5): state, ppid, pgrp, session, ...
            if int(fields[3]) != session:
                continue
            found = True
            cpu += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick  # utime, stime, cutime, cstime
            runnable |= fields[0] in (b"R", b"D")
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return (cpu, runnable) if found else None


class _Deadline:
    """When to stop a run for time (see ``SandboxLimits.timeout_s``): CPU time and state past the soft
    deadline, the wall clock at the hard one."""

    POLL_S = 0.1

    def __init__(self, start: float, limits: SandboxLimits, session: int | None):
        self.limit = limits.timeout_s
        self.hard = start + limits.timeout_s * limits.wall_factor
        self.next = start + limits.timeout_s
        self.session = session

    def remaining(self) -> float:
        return self.next - time.monotonic()

    def expired(self) -> bool:
        """Called when ``remaining()`` is up: True stops the run, else the next look is scheduled."""
        now = time.monotonic()
        usage = _session_usage(self.session) if self.session is not None else None
        if now >= self.hard or usage is None:
            return True
        cpu, runnable = usage
        if cpu >= self.limit or not runnable:
            return True
        self.next = min(now + self.POLL_S, self.hard)
        return False


def _collect(channels: dict[str, int], caps: dict[str, int],
             deadline: "_Deadline") -> tuple[dict[str, bytearray], str | None]:
    """Read every channel until the supervisor's status pipe closes, a cap is passed or the deadline."""
    data = {name: bytearray() for name in channels}
    selector = selectors.DefaultSelector()
    for name, fd in channels.items():
        selector.register(fd, selectors.EVENT_READ, name)
    stop = None
    try:
        while "status" in {key.data for key in selector.get_map().values()}:
            remaining = deadline.remaining()
            if remaining <= 0:
                if deadline.expired():
                    stop = "timeout"
                    break
                continue
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                data[key.data] += chunk
                if len(data[key.data]) > caps[key.data]:
                    stop = "output_limit"
            if stop:
                break
    finally:
        selector.close()
    return data, stop


def _drain(channels: dict[str, int], data: dict[str, bytearray], caps: dict[str, int], seconds: float) -> None:
    """After the kill: read what is left in the pipes (a survivor holding one is given ``seconds``)."""
    selector = selectors.DefaultSelector()
    for name, fd in channels.items():
        selector.register(fd, selectors.EVENT_READ, name)
    deadline = time.monotonic() + seconds
    try:
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk or len(data[key.data]) > caps[key.data]:
                    selector.unregister(key.fd)
                else:
                    data[key.data] += chunk
    finally:
        selector.close()


def _ending(status: str, stop: str | None) -> tuple[int | None, str]:
    """(returncode, reason) from the supervisor's status lines and why the parent stopped reading."""
    if stop is not None:
        return None, stop
    exit_lines = [line for line in status.splitlines() if line.startswith("exit ")]
    if "error " in status or not exit_lines:
        return None, "sandbox_error"
    returncode = os.waitstatus_to_exitcode(int(exit_lines[-1].split()[1]))
    if returncode == -signal.SIGXCPU:
        return returncode, "cpu_limit"
    return returncode, "signal" if returncode < 0 else "exited"


@functools.cache
def _shipped_sources() -> dict[str, bytes]:
    """The files that run inside the sandbox, read once: the supervisor and the case planning it imports."""
    sources = {}
    for name, path in _SHIPPED.items():
        with open(path, "rb") as handle:
            sources[name] = handle.read()
    return sources


def _write_job(files: dict[str, str], mode: str) -> tuple[str, str, str]:
    """Create the run's job directory with the shipped files (inside.py, cases.py) and ``files``.

    Returns (job, files_dir, workdir), the last two as the program sees them.
    """
    job = tempfile.mkdtemp(prefix="dashrl-sandbox-")
    os.chmod(job, 0o755)
    for name, content in {**_shipped_sources(), **{k: v.encode() for k, v in files.items()}}.items():
        path = os.path.join(job, name)
        with open(path, "wb") as handle:
            handle.write(content)
        os.chmod(path, 0o644)
    if mode == NAMESPACES:
        return job, _INSIDE_FILES, _INSIDE_WORKDIR
    workdir = os.path.join(job, "work")
    os.mkdir(workdir, 0o700)
    if _is_root():
        os.chown(workdir, SANDBOX_UID, SANDBOX_UID)
    return job, job, workdir


def _command(mode: str, python: str, job: str) -> list[str]:
    supervisor = [python, "-I", "-S", "-B", "-X", "utf8", os.path.join(job, "inside.py"), "supervise",
                  os.path.join(job, "spec.json")]
    if mode == PROCESS_GROUP:
        return supervisor
    userns = [] if _is_root() else ["--user", "--map-root-user"]
    return [_unshare(), "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", *userns, *supervisor]


def _execute(files: dict[str, str], run: list[str], limits: SandboxLimits, stdin: bytes,
             isolation: str | None, python: str | None, *, report: bool = False) -> SandboxResult:
    """Start the supervisor on a new job with ``files``, feed ``stdin``, collect output, kill, clean up.

    ``run`` is what the sandboxed process does: ["program"] (program.py) or ["harness"] (solution.py
    and tests.py); ``report`` reads the harness's report pipe.
    """
    mode = isolation or isolation_mode()
    if mode not in (NAMESPACES, PROCESS_GROUP):
        raise ValueError(f"unknown isolation {mode!r}; expected {NAMESPACES!r} or {PROCESS_GROUP!r}")
    if len(stdin) > _STDIN_CAP:
        raise ValueError(f"stdin is limited to {_STDIN_CAP} bytes, got {len(stdin)}")
    python = python or sys.executable
    start = time.monotonic()
    job = proc = None
    report_r, report_w = os.pipe()
    status_r, status_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()  # we hold the write end: when we die, the supervisor sees EOF
    try:
        job, files_dir, workdir = _write_job(files, mode)
        cover, expose = _filesystem_plan(python, limits.max_file_mb) if mode == NAMESPACES else ([], [])
        spec = {"namespaces": mode == NAMESPACES, "job": job, "files": sorted(files) + list(_SHIPPED),
                "files_dir": files_dir, "workdir": workdir, "run": run, "env": _program_env(python, workdir),
                "limits": asdict(limits), "drop_to": SANDBOX_UID if _is_root() else None,
                "status_fd": status_w, "report_fd": report_w, "lifeline_fd": lifeline_r,
                "cover": cover, "expose": expose}
        with open(os.path.join(job, "spec.json"), "w") as handle:
            json.dump(spec, handle)
        proc = subprocess.Popen(_command(mode, python, job), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(report_w, status_w, lifeline_r),
                                start_new_session=True, cwd="/",
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        for fd in (report_w, status_w, lifeline_r):
            os.close(fd)
        report_w = status_w = lifeline_r = -1
        try:
            proc.stdin.write(stdin)  # fits in the empty pipe: never blocks
            proc.stdin.close()
        except BrokenPipeError:
            pass
        channels = {"stdout": proc.stdout.fileno(), "stderr": proc.stderr.fileno(), "status": status_r}
        if report:
            channels["report"] = report_r
        caps = {"stdout": limits.max_output_bytes, "stderr": limits.max_output_bytes, "status": 1 << 12,
                "report": _REPORT_CAP}
        data, stop = _collect(channels, caps, _Deadline(start, limits, proc.pid))  # proc leads its own session
        _kill_tree(proc, mode)
        _drain(channels, data, caps, seconds=0.5)
    finally:
        if proc is not None:
            if proc.returncode is None:
                _kill_tree(proc, mode)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        for fd in (report_r, report_w, status_r, status_w, lifeline_r, lifeline_w):
            if fd >= 0:
                os.close(fd)
        if job is not None:
            _remove_tree(job)
    status = data["status"].decode(errors="replace")
    returncode, reason = _ending(status, stop)
    stderr = data["stderr"][: limits.max_output_bytes].decode(errors="replace")
    if reason == "sandbox_error":
        stderr += "".join(f"\n[sandbox] {line}" for line in status.splitlines() if line.startswith("error "))
    return SandboxResult(
        returncode=returncode,
        stdout=data["stdout"][: limits.max_output_bytes].decode(errors="replace"),
        stderr=stderr,
        timed_out=reason in ("timeout", "cpu_limit"),
        reason=reason,
        seconds=time.monotonic() - start,
        report=data.get("report", bytearray())[:_REPORT_CAP].decode(errors="replace"),
    )


# ------------------------------------------------------------------ the entry points


def run_python(program: str, limits: SandboxLimits = SandboxLimits(), *, stdin: str = "",
               isolation: str | None = None, python: str | None = None) -> SandboxResult:
    """Run ``program`` as ``__main__`` in the sandbox; ``stdin`` (at most 64 KiB) is its standard input.

    ``isolation`` forces a mode (``"namespaces"`` or ``"process-group"``); ``python`` is the interpreter
    (default: this one).
    """
    return _execute({"program.py": program}, ["program"], limits, stdin.encode(), isolation, python)


def run_tests(solution: str, tests: str, limits: SandboxLimits = SandboxLimits(), *,
              isolation: str | None = None, python: str | None = None) -> TestRun:
    """Run ``solution`` then the test program ``tests`` in the sandbox (see the module docstring).

    Raises SyntaxError when ``tests`` does not parse (a data error, not the solution's); a solution
    that does not parse is a failed run.
    """
    plan = plan_tests(tests)
    nonce = secrets.token_hex(16)
    result = _execute({"solution.py": solution, "tests.py": tests}, ["harness"], limits, (nonce + "\n").encode(),
                      isolation, python, report=True)
    outcome: dict[int, bool] = {}
    exceptions: list[str] = []
    finished = False
    error_in = None
    for line in result.report.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != nonce or finished:
            continue
        if words[1] == "case" and len(words) >= 4 and words[2].isdigit() and int(words[2]) < plan.cases:
            passed = words[3] == "pass"
            outcome.setdefault(int(words[2]), passed)
            if not passed:
                exceptions.append(words[4] if len(words) > 4 else "")
        elif words[1] == "error" and len(words) >= 4:
            error_in = words[2]
            exceptions.append(words[3])
        elif words[1] == "done":
            finished = True
    return TestRun(cases=plan.cases, passed=sum(outcome.values()), finished=finished,
                   exceptions=tuple(exceptions), error_in=error_in, sandbox=result)


def _unshare() -> str:
    path = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        raise FileNotFoundError("unshare not found")
    return path


_mode_lock = threading.Lock()
_mode: str | None = None


def _probe(mode: str) -> SandboxResult:
    return run_python("print('ok')", SandboxLimits(timeout_s=30.0), isolation=mode)


def isolation_mode() -> str:
    """The isolation this machine gives, found once per process: "namespaces", else "process-group".

    Raises UserError when neither can run a trivial program (e.g. as root, an interpreter that
    uid 65534 cannot execute and no namespaces).
    """
    global _mode
    with _mode_lock:
        if _mode is None:
            failures = []
            for mode in (NAMESPACES, PROCESS_GROUP):
                try:
                    probe = _probe(mode)
                except Exception as exc:  # noqa: BLE001 - any failure means: not this mode
                    failures.append(f"{mode}: {type(exc).__name__}: {exc}")
                    continue
                if probe.reason == "exited" and probe.returncode == 0 and probe.stdout == "ok\n":
                    _mode = mode
                    break
                failures.append(f"{mode}: {probe.reason} {probe.returncode} {probe.stderr.strip()[-300:]}")
            if _mode is None:
                from dashrl.errors import UserError

                raise UserError("the code sandbox cannot run Python here; " + "; ".join(failures))
            if _mode == PROCESS_GROUP:
                warnings.warn("dashrl sandbox: Linux namespaces are unavailable, falling back to process-group "
                              f"isolation, which is weaker (see dashrl/rewards/sandbox/__init__.py): {failures[0]}",
                              RuntimeWarning, stacklevel=2)
        return _mode
