"""Run untrusted Python in a contained process, and run a test program against a solution.

``run_python(program)`` runs one program; ``run_tests(solution, tests)`` runs a
solution followed by its test program and reports which test cases passed.
Both return after the program and every process it started are dead, and the
run's files are deleted. A run costs about 0.1 s of overhead (two cores).

The package holds both sides of the sandbox:

* ``host.py``, the parent side: limits and results, the job directory, starting
  the supervisor, reading its pipes, killing it and cleaning up, and
  ``isolation_mode()``.
* ``inside.py``, what runs in the sandbox: the supervisor (mounts, namespaces,
  limits, privileges) and the program runner and test harness. It imports only
  the standard library: the parent copies it into each run's job directory and
  starts that copy as the supervisor (``python -I -S inside.py supervise
  SPEC``), which forks the sandboxed process; that process drops its
  privileges, adds site-packages and runs the program (or the test harness
  below) without starting a second interpreter.
* ``cases.py``, used by both: how a test program splits into cases. Standard
  library only too, and copied into each run beside ``inside.py``.

Isolation, mode ``namespaces`` (used wherever ``unshare`` works: as root, or as
a user allowed to create user namespaces; ``isolation_mode()`` detects it once)

* Processes: parent -> ``unshare`` (new PID, mount, network and IPC
  namespaces, and a user namespace when not root) -> supervisor, PID 1 of the
  new PID namespace -> program. When the program exits the supervisor exits,
  and the kernel kills every process left in the namespace (daemons,
  ``setsid`` escapees, fork bombs). On timeout the parent kills the supervisor,
  with the same effect. ``/proc`` shows only the sandbox's own processes, and a
  signal to PID 1 from inside is ignored.
* User: as root, the program runs as uid/gid 65534 (nobody), no supplementary
  groups, inside a user namespace of its own, so that RLIMIT_NPROC counts this
  sandbox's processes only. As a non-root user it runs as uid 65534 of a
  nested user namespace (your uid outside). Either way it holds no
  capabilities, and ``PR_SET_NO_NEW_PRIVS`` makes setuid binaries powerless.
* Network: none. The namespace has only a loopback interface (brought up, so
  a program can talk to itself); 127.0.0.1 is not the host's.
* Files: every mount is read-only and nosuid (except the sandbox's own
  ``/proc``). ``/dev`` holds only null, zero, full, random and urandom (no
  GPU, disk or terminal). ``/tmp``, ``/dev/shm`` and ``/run`` are fresh tmpfs mounts
  (``max_file_mb`` each; ``/run`` 1 MB); the working directory
  ``/tmp/sandbox`` (also HOME and TMPDIR) is on the ``/tmp`` one, and starts
  empty. The parent user's home, and any directory that uid 65534 could not
  traverse on the interpreter's paths (a pyenv Python under ``/root``), are
  covered by empty read-only tmpfs mounts; the interpreter's own directories
  (its prefixes and ``sys.path`` under ``-I``) are bind-mounted back,
  read-only. Nothing the program writes outlives the run.
* Limits, per process (setrlimit): RLIMIT_AS ``memory_mb``, RLIMIT_CPU
  ``cpu_s``, RLIMIT_FSIZE ``max_file_mb``, RLIMIT_NPROC ``max_processes``
  (counts threads too), RLIMIT_CORE 0; and ``oom_score_adj`` 1000, so that the
  kernel's OOM killer picks sandbox processes first. Time ``timeout_s``, from
  the start: past it the parent stops a run whose processes used that much CPU
  time or are all asleep, and lets one that only waited for a busy CPU go on
  to at most ``wall_factor`` x ``timeout_s`` of wall clock (so a loaded machine
  does not turn a correct program into a timeout).
* Environment: built from scratch (PATH, HOME, TMPDIR, LANG, single-threaded
  BLAS/OpenMP, MPLBACKEND=Agg, no CUDA devices); Python runs with ``-I``, so PYTHON* variables,
  the user site and the current directory are ignored. stdin is empty.
* Output: stdout and stderr are read as they come; a stream longer than
  ``max_output_bytes`` stops the program (reason "output_limit").

Isolation, mode ``process-group`` (fallback when namespaces are unavailable;
a warning says so): the same rlimits, the same uid drop (as root: nobody, in a
user namespace of its own when the kernel allows one; as another user: your
own uid, so the program can read and write what you can), its own session and
working directory. The supervisor is a child subreaper: processes that
``setsid`` or double-fork stay its descendants, and it kills all of them when
the program ends or the parent times it out; then the process group is
killed too. What it loses: a program that kills the supervisor first (it can
when it runs as your uid, not as nobody) leaves orphans to init; there is no
private ``/tmp``, so files written to world-writable directories stay;
processes outside are visible; without the per-sandbox user namespace
RLIMIT_NPROC counts every process of uid 65534 on the machine; and "no
network" is only a Python audit hook in the program's interpreter that
refuses AF_INET/AF_INET6 connect, bind and send (ctypes, child processes and
non-Python programs get past it). As root the interpreter must be executable
by uid 65534 in this mode.

What this sandbox is not: not a seccomp filter and not a VM. The program
runs on the host kernel with the normal system-call surface (it may, for
instance, create user namespaces of its own), so a kernel exploit is out of
scope. There is no cgroup: memory is bounded per process, so one run may hold
up to ``max_processes x memory_mb`` (plus its tmpfs, which is RAM), and CPU
share is not limited, only CPU time. Unix sockets elsewhere on the host
filesystem stay reachable as file permissions allow.

Test harness (``run_tests``). The solution and the test program run in one
interpreter, solution first, in a module named ``__sandbox__`` (not
``__main__``: ``if __name__ == "__main__"`` blocks do not run). The solution
is compiled with postponed annotations (PEP 563, the default from Python
3.14), so a signature like ``def f(x: List[int])`` defines even without its
typing import. The test program is split into cases, read from its source:
each top-level ``assert`` statement, and each ``test*`` method of the
``unittest.TestCase`` subclasses it defines (the harness runs them; a
top-level ``unittest.main()`` call is skipped). A program with neither is one
case, passed when it runs to the end. A top-level statement that is not a
case and raises ends the run; cases not run count as failed.

Passing cannot be claimed by exiting early. The harness reads a random nonce
from stdin before any untrusted code runs and reports each case, then "done",
on a separate pipe, each line prefixed with the nonce. A run passes only when
every case reported a pass and "done" came after the last one, so ``sys.exit(0)``,
``os._exit(0)``, a crash, ``exec`` of another program, printed fake results
and the exit code all count for nothing. The residual: solution and tests share
the interpreter, so code that deliberately walks it (``sys._getframe``,
``gc``) can find the nonce and forge reports, and code that monkeypatches
what the tests use (builtins, ``unittest``) can make them pass. Ruling that
out needs the tests in a process apart from the solution; that is not done.
"""

from dashrl.rewards.sandbox.cases import TestPlan, plan_tests
from dashrl.rewards.sandbox.host import (
    NAMESPACES,
    PROCESS_GROUP,
    SandboxLimits,
    SandboxResult,
    TestRun,
    isolation_mode,
    run_python,
    run_tests,
)
from dashrl.rewards.sandbox.inside import SANDBOX_UID

__all__ = [
    "NAMESPACES",
    "PROCESS_GROUP",
    "SANDBOX_UID",
    "SandboxLimits",
    "SandboxResult",
    "TestPlan",
    "TestRun",
    "isolation_mode",
    "plan_tests",
    "run_python",
    "run_tests",
]
