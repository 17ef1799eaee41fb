"""Tests for the sandbox: test-case splitting, plain runs, the nonce harness, and hostile programs.

Every hostile program must end with score 0 (through ``score_code``), leave no process behind
(no child of this test process, no new process of uid 65534), write nothing outside its own
directory, and leave this process alive. Limits are tiny so that a bomb that escaped would show
up small; ``isolation_mode()`` picks namespaces on Linux as root (CI) and in most containers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dashrl.rewards.code import reward_from_run, score_code
from dashrl.rewards.sandbox import (
    NAMESPACES,
    PROCESS_GROUP,
    SandboxLimits,
    isolation_mode,
    plan_tests,
    run_python,
    run_tests,
)

TINY = SandboxLimits(timeout_s=3.0, cpu_s=2, memory_mb=256, max_processes=8, max_file_mb=8, max_output_bytes=4096)
PROJECT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def _uid_65534_pids() -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == 65534:
                    pids.add(int(entry))
            except OSError:
                pass
    return pids


def _my_children() -> list[int]:
    pid = os.getpid()
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children += handle.read().split()
        except FileNotFoundError:  # that thread ended after listdir; it has no children to report
            continue
    return [int(c) for c in children]


@pytest.fixture
def no_leftovers():
    """After the test: no child of this process and no new uid-65534 process is left.

    uid 65534 is machine-wide: other test suites running at the same time start sandboxes too, which
    end within their own time limits. So a new one must be gone within ``_GRACE_S``; a real leak
    (the hostile programs sleep 60 s or loop for ever) outlives that.
    """
    before = _uid_65534_pids()
    yield
    assert _my_children() == []
    deadline = time.monotonic() + _GRACE_S
    while _uid_65534_pids() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _uid_65534_pids() - before == set()


_GRACE_S = 20.0


def _fenced(code: str) -> str:
    return f"```python\n{code}\n```"


# ------------------------------------------------------------------ test programs -> cases


def test_plan_counts_top_level_asserts_and_unittest_methods() -> None:
    tests = (
        "import unittest\n"
        "X = 2\n"                          # setup
        "assert f(1) == 2\n"               # case 0
        "for i in range(3):\n"             # setup (an assert inside a loop is not a case)
        "    assert f(i) == i + 1\n"
        "assert f(2) == 3\n"               # case 1
        "class Base(unittest.TestCase):\n"
        "    def test_b(self): pass\n"     # case 2: Base.test_b
        "    def helper(self): pass\n"
        "class Child(Base):\n"
        "    def test_a(self): pass\n"     # cases 3, 4: Child.test_a, Child.test_b (inherited, name order)
        "class NotATest:\n"
        "    def test_x(self): pass\n"
    )
    plan = plan_tests(tests)
    # 2 asserts + Base.test_b + Child.test_a + Child.test_b = 5
    assert plan.cases == 5
    assert [case for _, case in plan.steps] == [None, None, 0, None, 1, None, None, None]
    assert plan.unittest == (("Base", "test_b"), ("Child", "test_a"), ("Child", "test_b"))


def test_plan_skips_a_top_level_unittest_main() -> None:
    plan = plan_tests("import unittest\nclass T(unittest.TestCase):\n    def test_a(self): pass\nunittest.main()\n")
    assert [type(stmt).__name__ for stmt, _ in plan.steps] == ["Import", "ClassDef"]
    assert plan.cases == 1


def test_plan_without_cases_is_one_case() -> None:
    plan = plan_tests("def check(c):\n    assert c(1) == 2\n\ncheck(f)\n")
    assert plan.explicit_cases == 0
    assert plan.cases == 1


def test_plan_raises_on_a_test_program_that_does_not_parse() -> None:
    with pytest.raises(SyntaxError):
        plan_tests("assert (\n")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=0)


# ------------------------------------------------------------------ plain runs


def test_run_python_captures_output_exit_code_and_stdin(no_leftovers) -> None:
    result = run_python("import sys\nprint(sys.stdin.read().upper())\nprint('err', file=sys.stderr)\nsys.exit(3)",
                        TINY, stdin="hello")
    assert (result.reason, result.returncode, result.timed_out) == ("exited", 3, False)
    assert result.stdout == "HELLO\n"
    assert result.stderr == "err\n"


def test_run_python_environment_is_built_from_scratch(no_leftovers, monkeypatch) -> None:
    monkeypatch.setenv("DASHRL_TEST_SECRET", "s3cr3t-value")
    result = run_python("import os, sys\nprint(sorted(os.environ))\nprint(os.getcwd() == os.environ['HOME'] "
                        "== os.environ['TMPDIR'])\nprint(os.listdir('.'))", TINY)
    names, same_dir, listing = result.stdout.splitlines()
    assert "DASHRL_TEST_SECRET" not in names and "s3cr3t" not in result.stdout
    assert eval(names) == sorted(["PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "OPENBLAS_NUM_THREADS",
                                  "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "MPLBACKEND",
                                  "CUDA_VISIBLE_DEVICES"])
    assert same_dir == "True"
    assert listing == "[]"  # the working directory starts empty


def test_run_python_as_root_runs_as_nobody(no_leftovers) -> None:
    if os.geteuid() != 0:
        pytest.skip("the uid drop is for root")
    result = run_python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())", TINY)
    assert result.stdout == "65534 65534 []\n"


def test_dev_holds_only_harmless_devices(no_leftovers) -> None:
    if isolation_mode() != NAMESPACES:
        pytest.skip("a private /dev needs namespaces")
    result = run_python("import os\nprint(sorted(os.listdir('/dev')))\nopen('/dev/null', 'w').write('x')\n"
                        "print(len(open('/dev/urandom', 'rb').read(8)))", TINY)
    assert result.stdout.splitlines() == [
        "['fd', 'full', 'null', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'urandom', 'zero']", "8"]


def test_working_directory_is_deleted_afterwards(no_leftovers) -> None:
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("dashrl-sandbox-*"))
    result = run_python("open('kept.txt', 'w').write('x')\nimport os\nprint(os.getcwd())", TINY)
    assert result.reason == "exited" and result.returncode == 0
    assert set(Path(os.environ.get("TMPDIR", "/tmp")).glob("dashrl-sandbox-*")) == before
    assert not Path(result.stdout.strip(), "kept.txt").exists()


def test_a_killed_program_reports_its_signal(no_leftovers) -> None:
    result = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)", TINY)
    assert (result.reason, result.returncode) == ("signal", -15)


def test_cpu_time_limit(no_leftovers) -> None:
    limits = SandboxLimits(timeout_s=10.0, cpu_s=1)
    result = run_python("while True:\n    pass", limits)
    assert result.reason == "cpu_limit" and result.timed_out  # 1 s of CPU, however long a loaded machine took
    assert result.seconds < limits.timeout_s * limits.wall_factor


# ------------------------------------------------------------------ the nonce harness


def test_harness_reports_each_case_behind_the_nonce(no_leftovers) -> None:
    run = run_tests("def f(x):\n    return x + 1\n", "assert f(1) == 2\nassert f(2) == 4\nassert f(3) == 4\n", TINY)
    # cases 0 and 2 pass, case 1 fails: 2 of 3
    assert (run.cases, run.passed, run.finished, run.all_passed) == (3, 2, True, False)
    assert run.exceptions == ("AssertionError",)
    assert run.error_in is None


def test_harness_runs_unittest_classes_without_unittest_main(no_leftovers) -> None:
    tests = ("import unittest\n"
             "class T(unittest.TestCase):\n"
             "    def test_one(self):\n        self.assertEqual(f(1), 2)\n"
             "    def test_two(self):\n        self.assertEqual(f(2), 4)\n"
             "    def test_three(self):\n        raise ValueError('boom')\n")
    run = run_tests("def f(x):\n    return x + 1\n", tests, TINY)
    # test_one passes; test_two fails (3 != 4); test_three errors: 1 of 3
    assert (run.cases, run.passed, run.finished) == (3, 1, True)
    assert sorted(run.exceptions) == ["AssertionError", "ValueError"]


def test_harness_stops_at_a_failing_setup_statement(no_leftovers) -> None:
    run = run_tests("def f(x):\n    return x\n", "assert f(1) == 1\ncheck(f)\nassert f(2) == 2\n", TINY)
    # case 0 passes, then `check` is undefined: the run stops and case 1 never runs
    assert (run.passed, run.finished, run.error_in, run.exceptions) == (1, False, "tests", ("NameError",))


def test_harness_ignores_reports_without_the_nonce(no_leftovers) -> None:
    forged = ("import os\n"
              "for fd in range(3, 20):\n"
              "    for line in (b'case 0 pass\\n', b'x case 0 pass\\n', b'x done\\n', b'done\\n'):\n"
              "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\n"
              "print('case 0 pass')\nprint('done')\n"
              "os._exit(0)\n")
    run = run_tests(forged, "assert False\n", TINY)
    assert (run.passed, run.finished, run.all_passed) == (0, False, False)


def test_solution_is_compiled_with_postponed_annotations(no_leftovers) -> None:
    # List is never imported: with PEP 563 the annotation is not evaluated, so f defines.
    run = run_tests("def f(xs: List[int]) -> int:\n    return sum(xs)\n", "assert f([1, 2]) == 3\n", TINY)
    assert run.all_passed


def test_solution_main_block_does_not_run(no_leftovers) -> None:
    run = run_tests("def f():\n    return 1\nif __name__ == '__main__':\n    input()\n", "assert f() == 1\n", TINY)
    assert run.all_passed


# ------------------------------------------------------------------ hostile programs


def _score(solution: str, tests: str, limits: SandboxLimits = TINY):
    start = time.monotonic()
    result = score_code(_fenced(solution), tests, limits=limits)
    assert time.monotonic() - start < limits.timeout_s * limits.wall_factor + 5  # the wall-clock cap
    assert result.score == 0.0
    return result


HOSTILE = {
    "infinite_loop": ("while True:\n    pass\n", "assert True\n", {"timeout"}),
    "sleeping_loop": ("import time\nwhile True:\n    time.sleep(0.1)\n", "assert True\n", {"timeout"}),
    "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                  "assert True\n", {"timeout"}),
    "daemon_escape": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                      "        time.sleep(60)\n    os._exit(0)\nos._exit(0)\n", "assert True\n", {"exited"}),
    "memory_bomb": ("x = bytearray(8 * 1024 ** 3)\n", "assert True\n", {"memory"}),
    "growing_memory": ("chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 ** 2))\n",
                       "assert True\n", {"memory"}),
    "huge_output": ("while True:\n    print('x' * 1000)\n", "assert True\n", {"output_limit"}),
    "huge_stderr": ("import sys\nwhile True:\n    sys.stderr.write('x' * 1000)\n", "assert True\n",
                    {"output_limit"}),
    "huge_file": ("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 2 ** 20)\n",
                  "assert True\n", {"error"}),
    "segfault": ("import ctypes\nctypes.string_at(0)\n", "assert True\n", {"crashed"}),
    "kill_self": ("import os\nos.kill(os.getpid(), 9)\n", "assert True\n", {"crashed"}),
    "sys_exit_before_tests": ("import sys\nsys.exit(0)\n", "assert False\n", {"exited"}),
    "os_exit_before_tests": ("import os\nos._exit(0)\n", "assert False\n", {"exited"}),
    "os_exit_inside_a_test": ("import os\ndef f():\n    os._exit(0)\n", "assert f() == 1\n", {"exited"}),
    "exec_true": ("import os\nos.execv('/bin/true', ['true'])\n", "assert False\n", {"exited"}),
    "raise_system_exit_in_tests": ("def f():\n    raise SystemExit(0)\n", "f()\nassert False\n", {"exited"}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_scores_zero_and_leaves_nothing(name: str, no_leftovers) -> None:
    solution, tests, reasons = HOSTILE[name]
    assert _score(solution, tests).reason in reasons


def test_cannot_write_outside_its_directory(no_leftovers) -> None:
    token = secrets.token_hex(6)
    targets = [Path.home() / f"dashrl-probe-{token}", PROJECT / f"dashrl-probe-{token}",
               Path("/tmp") / f"dashrl-probe-{token}", Path("/var/tmp") / f"dashrl-probe-{token}"]
    solution = ("import os\nWRITTEN = []\n"
                f"for path in {[str(t) for t in targets]!r}:\n"
                "    try:\n        open(path, 'w').write('x')\n        WRITTEN.append(path)\n"
                "    except OSError:\n        pass\n")
    result = _score(solution, "assert len(WRITTEN) == 4\n")
    try:
        assert result.reason == "failed"
        assert [t for t in targets if t.exists()] == []
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


def test_cannot_read_the_parents_environment(no_leftovers, monkeypatch) -> None:
    secret = secrets.token_hex(8)
    monkeypatch.setenv("DASHRL_TEST_SECRET", secret)
    solution = ("import os, glob\nFOUND = os.environ.get('DASHRL_TEST_SECRET', '')\n"
                "for path in glob.glob('/proc/*/environ'):\n"
                "    try:\n        FOUND += open(path, 'rb').read().decode(errors='replace')\n"
                "    except OSError:\n        pass\nprint(FOUND)\n")
    tests = f"assert {secret!r} in FOUND\n"
    assert _score(solution, tests).reason == "failed"
    run = run_tests(solution, tests, TINY)
    assert "PATH=" in run.sandbox.stdout  # it did read some environment: its own
    assert secret not in run.sandbox.stdout


@pytest.fixture
def listening_server():
    """A TCP server on 127.0.0.1 that records every byte it receives, plus a UDP socket that does the same."""
    received: list[bytes] = []
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.settimeout(0.2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = tcp.accept()
                received.append(b"<connect>" + connection.recv(1024))
                connection.close()
            except OSError:
                pass
            try:
                received.append(udp.recv(1024))
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield tcp.getsockname()[1], udp.getsockname()[1], received
    stop.set()
    thread.join()
    tcp.close()
    udp.close()


NETWORK_PROGRAM = """import socket
SENT = []
try:
    with socket.create_connection(("127.0.0.1", {tcp}), timeout=1) as s:
        s.sendall(b"leak")
        SENT.append("tcp")
except OSError:
    pass
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"leak", ("127.0.0.1", {udp}))
    SENT.append("udp")
except OSError:
    pass
"""


def test_cannot_reach_a_server_on_the_host(no_leftovers, listening_server) -> None:
    tcp, udp, received = listening_server
    # UDP sendto succeeds into the sandbox's own loopback; only a TCP connect can tell it reached a server
    result = _score(NETWORK_PROGRAM.format(tcp=tcp, udp=udp), "assert 'tcp' in SENT\n")
    time.sleep(0.5)  # give a leaked packet time to arrive
    assert received == []
    assert result.reason == "failed"


def test_cannot_kill_its_parent_or_this_process(no_leftovers) -> None:
    solution = ("import os, signal\nKILLED = []\n"
                f"for pid in (os.getppid(), {os.getpid()}, -1):\n"
                "    try:\n        os.kill(pid, signal.SIGKILL)\n        KILLED.append(pid)\n"
                "    except OSError:\n        pass\n"
                "try:\n    os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\nexcept OSError:\n    pass\n")
    _score(solution, f"assert {os.getpid()} in KILLED or 1 not in KILLED\nassert False\n")
    assert os.getpid() > 0  # still here


def _wait_until(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _kill_the_parent_mid_run(isolation: str, python: str | None = None) -> None:
    """Start a parent process running a sleeping sandbox, SIGKILL the parent: the sandbox must end too."""
    before_pids, before_jobs = _uid_65534_pids(), set(Path(tempfile.gettempdir()).glob("dashrl-sandbox-*"))
    script = ("import sys\nfrom dashrl.rewards.sandbox import SandboxLimits, run_python\n"
              "run_python('import os, time\\nos.fork()\\nprint(1, flush=True)\\ntime.sleep(60)', "
              f"SandboxLimits(timeout_s=60.0), isolation={isolation!r}, python={python!r})\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT)
    try:
        assert _wait_until(lambda: len(_uid_65534_pids() - before_pids) >= 2, seconds=30)
    finally:
        parent.kill()
        parent.wait()
    assert _wait_until(lambda: _uid_65534_pids() - before_pids == set())
    assert _wait_until(lambda: set(Path(tempfile.gettempdir()).glob("dashrl-sandbox-*")) == before_jobs)


def test_sandbox_ends_when_its_parent_dies(no_leftovers) -> None:
    if os.geteuid() != 0:
        pytest.skip("counts uid-65534 processes, which only a root parent starts")
    _kill_the_parent_mid_run(isolation_mode())


# ------------------------------------------------------------------ the process-group fallback


@pytest.fixture
def fallback_python() -> str:
    if os.geteuid() != 0:
        pytest.skip("process-group fallback tests need root (as another user the program runs as you)")
    if SYSTEM_PYTHON is None:
        pytest.skip("no /usr/bin/python3 (the fallback's uid 65534 must be able to execute the interpreter)")
    probe = run_python("print('ok')", TINY, isolation=PROCESS_GROUP, python=SYSTEM_PYTHON)
    if probe.stdout != "ok\n":
        pytest.skip(f"uid 65534 cannot run {SYSTEM_PYTHON}: {probe.stderr[-200:]}")
    return SYSTEM_PYTHON


@pytest.mark.parametrize("name", ["infinite_loop", "fork_bomb", "memory_bomb", "huge_output", "os_exit_before_tests",
                                  "daemon_escape"])
def test_fallback_contains_hostile_programs(name: str, fallback_python: str, no_leftovers) -> None:
    solution, tests, reasons = HOSTILE[name]
    run = run_tests(solution, tests, TINY, isolation=PROCESS_GROUP, python=fallback_python)
    assert not run.all_passed
    assert reward_from_run(run, solution).reason in reasons


def test_fallback_refuses_network_in_python(fallback_python: str, no_leftovers, listening_server) -> None:
    tcp, udp, received = listening_server
    run = run_tests(NETWORK_PROGRAM.format(tcp=tcp, udp=udp), "assert SENT == []\nassert 'tcp' in SENT\n", TINY,
                    isolation=PROCESS_GROUP, python=fallback_python)
    time.sleep(0.5)
    assert received == []
    # the audit hook refused both: case 0 (nothing sent) passes, case 1 (tcp sent) fails
    assert (run.cases, run.passed, run.finished) == (2, 1, True)


def test_fallback_sandbox_ends_when_its_parent_dies(fallback_python: str, no_leftovers) -> None:
    _kill_the_parent_mid_run(PROCESS_GROUP, fallback_python)


def test_fallback_runs_as_nobody_and_passes_good_code(fallback_python: str, no_leftovers) -> None:
    run = run_tests("import os\ndef f():\n    return os.getuid()\n", "assert f() == 65534\n", TINY,
                    isolation=PROCESS_GROUP, python=fallback_python)
    assert run.all_passed


def test_isolation_mode_is_namespaces_where_unshare_works() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    assert isolation_mode() in (NAMESPACES, PROCESS_GROUP)
    if os.geteuid() == 0:
        assert isolation_mode() == NAMESPACES


# ------------------------------------------------------------------ time verdict on a loaded machine (issue 11.9)


def test_deadline_stops_on_cpu_time_or_sleep_and_waits_for_a_starved_program(monkeypatch) -> None:
    from dashrl.rewards.sandbox import host

    limits = SandboxLimits(timeout_s=2.0, wall_factor=3.0)
    clock = [0.0]
    monkeypatch.setattr(host.time, "monotonic", lambda: clock[0])
    usage = {}
    monkeypatch.setattr(host, "_session_usage", lambda session: usage.get("now"))
    deadline = host._Deadline(0.0, limits, session=123)
    assert deadline.remaining() == 2.0  # nothing is looked at before timeout_s
    clock[0], usage["now"] = 2.0, (0.3, True)  # runnable, little CPU: it waited for a busy CPU
    assert not deadline.expired()
    clock[0], usage["now"] = 4.0, (2.0, True)  # used its 2 s of CPU
    assert deadline.expired()
    clock[0], usage["now"] = 2.0, (0.1, False)  # asleep (time.sleep, input(), a deadlock): its own doing
    assert deadline.expired()
    clock[0], usage["now"] = 6.0, (0.5, True)  # the wall-clock cap, wall_factor x timeout_s
    assert deadline.expired()
    clock[0], usage["now"] = 2.0, None  # /proc shows nothing: the wall clock alone
    assert deadline.expired()


def test_a_program_starved_of_cpu_is_not_a_timeout(monkeypatch, no_leftovers) -> None:
    """On a loaded machine a correct program may pass timeout_s of wall clock while runnable; it still passes."""
    from dashrl.rewards.sandbox import host

    monkeypatch.setattr(host, "_session_usage", lambda session: (0.0, True))  # what /proc shows when starved
    run = run_tests("import time\ntime.sleep(1.5)\ndef f():\n    return 1\n", "assert f() == 1\n",
                    SandboxLimits(timeout_s=0.5, wall_factor=20.0))
    assert run.all_passed and run.sandbox.reason == "exited"


def test_session_usage_sees_this_process_session() -> None:
    from dashrl.rewards.sandbox import host

    usage = host._session_usage(os.getsid(0))
    assert usage is not None and usage[0] > 0 and usage[1]  # this test is running, and has used CPU
