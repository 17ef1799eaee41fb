"""The inside of the sandbox: the supervisor, and the program runner and test harness it forks.

Standard library only: the parent (``host.py``) copies this file and ``cases.py`` into each run's
job directory and starts the copy as the supervisor, ``python -I -S -B -X utf8 inside.py supervise
SPEC.json``, where SPEC.json (written by ``host._execute``) holds the mode, limits, paths,
environment and pipe numbers. The program runs in a forked copy of this interpreter (so this
module, and ``cases`` as a top-level module, are in its ``sys.modules``). Nothing here judges the
run: the parent reads the pipes and decides.

The supervisor (PID 1 of the sandbox's PID namespace, or a child subreaper in the process-group
fallback) builds the filesystem with mount calls made through ``ctypes`` (namespaces mode), forks
the sandboxed process, writes that process's wait status (or why preparing failed) on the status
pipe, and kills whatever the program left running. The sandboxed process sets the rlimits, drops
its uid and capabilities, adds site-packages and runs ``program.py`` as ``__main__``, or the test
harness, which runs ``solution.py`` and the cases of ``tests.py`` and reports each case, behind the
nonce read from stdin, on the report pipe. What is isolated, and what is not: the package
docstring (``dashrl.rewards.sandbox``).
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import sys
import traceback
from collections.abc import Callable

if __package__:  # imported by host.py, as part of dashrl.rewards.sandbox
    from .cases import TestPlan, plan_tests
else:  # started as the supervisor: cases.py was copied beside this file, and -I leaves that directory off sys.path
    sys.path.insert(0, os.path.dirname(__file__))
    from cases import TestPlan, plan_tests
    del sys.path[0]

SANDBOX_UID = 65534  # nobody: the uid the program runs as (outside too when the parent is root)

# ------------------------------------------------------------------ the supervisor

_CLONE_NEWUSER = 0x10000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC = 0x2, 0x4, 0x1000, 0x4000
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID = 0x1, 0x2
_SYS_MOUNT_SETATTR = 442  # the same number on x86_64 and arm64
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 4, 36, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_DEVICES = ("null", "zero", "full", "random", "urandom")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, options: str | None = None) -> None:
    _check(_libc().mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                         options.encode() if options else None), f"mount {target}")


def _set_mount_attr(path: str, set_flags: int, clear_flags: int, recursive: bool) -> None:
    attr = _MountAttr(set_flags, clear_flags, 0, 0)
    _check(_libc().syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, path.encode(), _AT_RECURSIVE if recursive else 0,
                           ctypes.byref(attr), ctypes.sizeof(attr)), f"mount_setattr {path}")


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, struct.pack("16sH14x", b"lo", 0)))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def _minimal_dev() -> None:
    """Replace /dev by a read-only tmpfs holding only the harmless devices (no GPU, disk or terminal)."""
    nodes = {name: os.open(f"/dev/{name}", os.O_PATH) for name in _DEVICES if os.path.exists(f"/dev/{name}")}
    _mount("tmpfs", "/dev", "tmpfs", _MS_NOSUID, "size=64k,mode=755")
    for name, fd in nodes.items():
        open(f"/dev/{name}", "w").close()  # the mount point
        _mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, _MS_BIND)
        os.close(fd)
    os.mkdir("/dev/shm")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{name}")
    _set_mount_attr("/dev", _MOUNT_ATTR_RDONLY, 0, recursive=True)


def _build_filesystem(spec: dict) -> None:
    """Namespaces mode, as root of the new mount namespace: read-only world, private scratch mounts."""
    files = {}
    for name in spec["files"]:
        with open(os.path.join(spec["job"], name), "rb") as handle:
            files[name] = handle.read()
    shutil.rmtree(spec["job"], ignore_errors=True)  # all read: nothing is left behind even if the parent dies
    keep = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in spec["expose"]}
    _set_mount_attr("/", _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, recursive=True)
    _set_mount_attr("/proc", 0, _MOUNT_ATTR_RDONLY, recursive=False)  # the program's own /proc/self
    _minimal_dev()
    for path, options, _ in spec["cover"]:
        _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    os.umask(0o022)
    for path, fd in keep.items():
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        os.close(fd)
    for path, _, writable in spec["cover"]:
        if not writable:
            _set_mount_attr(path, _MOUNT_ATTR_RDONLY, 0, recursive=True)
    os.makedirs(spec["files_dir"], 0o755)
    for name, content in files.items():
        with open(os.path.join(spec["files_dir"], name), "wb") as handle:
            handle.write(content)
    os.makedirs(spec["workdir"], 0o700)
    if spec["drop_to"] is not None:
        os.chown(spec["workdir"], spec["drop_to"], spec["drop_to"])


def _own_user_namespace(uid: int, gid: int) -> bool:
    """Move into a new user namespace as ``uid`` there (our current uid outside); False if not allowed."""
    outer_uid, outer_gid = os.getuid(), os.getgid()
    if _libc().unshare(_CLONE_NEWUSER) != 0:
        return False
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {outer_uid} 1"), ("gid_map", f"{gid} {outer_gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)
    return True


def _drop_capabilities() -> None:
    """Empty every capability set (capset v3): the new user namespace gave this process all of its own."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc().capset(header, data), "capset")


def _enter(spec: dict) -> None:
    """In the supervisor's child: limits, no privileges, the program's directory and environment."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    limits = spec["limits"]
    memory, file_size = limits["memory_mb"] << 20, limits["max_file_mb"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    uid = spec["drop_to"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _libc().prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # the uid change made /proc/self root's; the map needs it
        _own_user_namespace(SANDBOX_UID, SANDBOX_UID)  # its own process count; if refused, uid 65534's shared one
    elif spec["namespaces"] and not _own_user_namespace(SANDBOX_UID, SANDBOX_UID):
        raise OSError("cannot leave the root of the user namespace")
    _drop_capabilities()
    # NPROC after the uid change: set before it, a busy uid 65534 would make the change fail
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"], limits["max_processes"]))
    _check(_libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.chdir(spec["workdir"])
    os.environ.clear()
    os.environ.update(spec["env"])
    import site

    site.main()  # the supervisor started without site-packages (-S): add them now, as the program's user


def _supervise(spec_path: str) -> None:
    """PID 1 of the sandbox (namespaces) or its session leader: fork the program, wait, report its status."""
    with open(spec_path) as handle:
        spec = json.load(handle)
    status_fd = spec["status_fd"]
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
        if spec["namespaces"]:
            _build_filesystem(spec)
            _loopback_up()
        else:  # orphans (setsid, double fork) become our children, so that we can kill them all
            _check(_libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "child subreaper")
            signal.signal(signal.SIGTERM, _kill_descendants_and_exit)
        child = os.fork()
        if child == 0:
            _enter(spec)
            os.close(status_fd)
            os.close(spec["lifeline_fd"])
    except BaseException as exc:  # noqa: BLE001 - report anything; the parent turns it into sandbox_error
        os.write(status_fd, f"error preparing the sandbox: {type(exc).__name__}: {exc}\n".encode())
        os._exit(1)
    if child == 0:  # from here on the process runs untrusted code; it never returns to this function
        if spec["run"][0] == "harness":
            _harness(spec["report_fd"], spec["files_dir"], guard_network=not spec["namespaces"])
        os.close(spec["report_fd"])
        _program(os.path.join(spec["files_dir"], "program.py"), guard_network=not spec["namespaces"])
        raise SystemExit(0)
    os.close(spec["report_fd"])
    status = _wait_for(child, spec["lifeline_fd"])
    _kill_descendants()  # process-group mode: what the program left running (namespaces: the kernel does it)
    if status is None:  # the parent died: clean up in its place (namespaces: the job is gone already)
        shutil.rmtree(spec["job"], ignore_errors=True)
    else:
        os.write(status_fd, f"exit {status}\n".encode())
    os._exit(0)


def _wait_for(child: int, lifeline: int) -> int | None:
    """The program's wait status once it exits, or None as soon as the parent is gone (lifeline EOF).

    Meanwhile reaps orphans (as PID 1 or subreaper), at least every 0.2 s.
    """
    try:
        pidfd = os.pidfd_open(child)  # readable when the child exits (Linux 5.3)
        watched, period = [lifeline, pidfd], 0.2
    except (AttributeError, OSError):
        watched, period = [lifeline], 0.02
    while True:
        readable, _, _ = select.select(watched, [], [], period)
        if lifeline in readable and not os.read(lifeline, 1):
            return None
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == child:
                return status
            if pid == 0:
                break


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    children = [int(child) for child in handle.read().split()]
            except OSError:
                continue
            found += children
            frontier += children
    return found


def _kill_descendants() -> None:
    """SIGKILL every descendant and reap them, until none is left (a fork bomb needs a few rounds)."""
    for _ in range(1000):
        pids = _descendants(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


def _kill_descendants_and_exit(_signum: int, _frame: object) -> None:
    _kill_descendants()
    os._exit(0)


# ------------------------------------------------------------------ the program and the test harness


def _refuse_network() -> None:
    """process-group mode: refuse IP connect/bind/send in this interpreter (a guard, not a wall)."""
    import socket

    def hook(event: str, args: tuple) -> None:
        if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
            if getattr(args[0], "family", None) in (socket.AF_INET, socket.AF_INET6):
                raise PermissionError("network access is disabled in the sandbox")
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            raise PermissionError("network access is disabled in the sandbox")

    sys.addaudithook(hook)


def _program(path: str, guard_network: bool) -> None:
    """Run the program file as ``__main__``; its exceptions and SystemExit end the process as usual."""
    import runpy

    if guard_network:
        _refuse_network()
    sys.argv = [path]
    runpy.run_path(path, run_name="__main__")


def _read_nonce() -> str:
    """The nonce is the first line of stdin; stdin is then /dev/null for the program."""
    nonce = sys.stdin.readline().strip()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return nonce


def _exception_name(exc: BaseException) -> str:
    return "".join(type(exc).__name__.split()) or "Exception"


def _run_unittest_cases(plan: TestPlan, namespace: dict, report: Callable[..., None]) -> None:
    """Run the plan's unittest methods class by class (so class fixtures run once), reporting each test."""
    import unittest  # only here: importing it costs about 40 ms

    class Reporting(unittest.TestResult):
        def __init__(self, cases: dict[int, int]):
            super().__init__()
            self.cases = cases  # id(test) -> case number
            self.failed_with: str | None = None

        def startTest(self, test):
            super().startTest(test)
            self.failed_with = None

        def _failed(self, test, err) -> None:
            self.failed_with = self.failed_with or err[0].__name__
            sys.stderr.write(f"{test.id()}:\n{self._exc_info_to_string(err, test)}\n")

        def addError(self, test, err):
            super().addError(test, err)
            self._failed(test, err)

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._failed(test, err)

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                self._failed(subtest, err)

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self.failed_with = "UnexpectedSuccess"

        def stopTest(self, test):
            super().stopTest(test)
            if id(test) in self.cases:
                outcome = ("pass",) if self.failed_with is None else ("fail", self.failed_with)
                report("case", str(self.cases[id(test)]), *outcome)

    first = plan.explicit_cases - len(plan.unittest)
    for class_name in dict.fromkeys(name for name, _ in plan.unittest):
        cases = {method: first + i for i, (name, method) in enumerate(plan.unittest) if name == class_name}
        try:
            tests = {namespace[class_name](method): case for method, case in cases.items()}
            unittest.TestSuite(list(tests)).run(Reporting({id(test): case for test, case in tests.items()}))
        except BaseException as exc:  # noqa: BLE001 - the class is missing or broken: its cases fail
            traceback.print_exc()
            for case in cases.values():
                report("case", str(case), "fail", _exception_name(exc))


def _harness(report_fd: int, files_dir: str, guard_network: bool) -> None:
    """Run the solution, then the test program's statements and unittest cases, reporting each case
    on ``report_fd`` behind the nonce, then "done". Never returns."""
    import __future__
    import types

    nonce = _read_nonce()
    write, exit_now = os.write, os._exit  # kept before untrusted code can replace them

    def report(*words: str) -> None:
        write(report_fd, (" ".join((nonce, *words)) + "\n").encode())

    def stop(where: str, exc: BaseException) -> None:
        traceback.print_exc()
        report("error", where, _exception_name(exc))
        exit_now(1)

    paths = {name: os.path.join(files_dir, name) for name in ("solution.py", "tests.py")}
    sources = {}
    for name, path in paths.items():
        with open(path, encoding="utf-8") as handle:
            sources[name] = handle.read()
    plan = plan_tests(sources["tests.py"])
    steps = [(compile(ast.Module([stmt], []), paths["tests.py"], "exec", dont_inherit=True), case)
             for stmt, case in plan.steps]
    try:
        solution = compile(sources["solution.py"], paths["solution.py"], "exec",
                           flags=__future__.annotations.compiler_flag, dont_inherit=True)
    except BaseException as exc:  # noqa: BLE001
        stop("solution", exc)
    if guard_network:
        _refuse_network()
    module = types.ModuleType("__sandbox__")
    module.__file__ = paths["solution.py"]
    sys.modules["__sandbox__"] = module
    sys.argv = [paths["solution.py"]]
    try:
        exec(solution, module.__dict__)
    except BaseException as exc:  # noqa: BLE001
        stop("solution", exc)
    for code, case in steps:
        try:
            exec(code, module.__dict__)
        except BaseException as exc:  # noqa: BLE001
            if case is None:
                stop("tests", exc)
            traceback.print_exc()
            report("case", str(case), "fail", _exception_name(exc))
        else:
            if case is not None:
                report("case", str(case), "pass")
    if plan.unittest:
        _run_unittest_cases(plan, module.__dict__, report)
    if plan.explicit_cases == 0:
        report("case", "0", "pass")
    report("done")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program may have closed or replaced them
            pass
    exit_now(0)


def _main(argv: list[str]) -> None:
    if argv[1:2] != ["supervise"] or len(argv) != 3:
        raise SystemExit("usage: inside.py supervise SPEC.json (started by dashrl.rewards.sandbox)")
    _supervise(argv[2])


if __name__ == "__main__":
    _main(sys.argv)
