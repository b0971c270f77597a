"""The project's "one owner for processes" rule, checked on dinit's source and on a running dinit.

The rule (DEVELOPERS; supervisor.py's docstring): dinit's event loop thread alone spawns, signals and
reaps. Reaping is ``waitid(WNOWAIT)`` + ``waitpid`` of exactly the PID seen, in the supervisor (and,
for a process it holds under ptrace, the redirect code). Anything that waits for a child on its own —
``subprocess.run``/``call``/``check_*``, ``Popen(...).wait()``/``.poll()``/``.communicate()``,
``os.system``, ``asyncio.create_subprocess_*``, ``os.wait()`` — would be a second owner: it could take
an exit status the supervisor needs (§6.1: "no exit status ... is ever lost or misattributed"), or
block the loop while signals and zombies wait.

Two related rules are pinned here too, because breaking them is silent until production:
- dinit never blocks signals with ``pthread_sigmask(SIG_BLOCK, ...)``: a blocked signal is inherited
  across ``fork``/``exec`` and delays teardown; dinit must react to every signal at once (§8, §3).
- dinit never makes fd 1 or fd 2 non-blocking: their open file descriptions are shared with whoever
  started dinit (the container runtime, a terminal), which would then get EAGAIN (writer.py).

The source checks use ``ast`` (not text search), so comments, docstrings and strings never trigger
them, and each checker is itself tested on small good and bad snippets.
"""

from __future__ import annotations

import ast
import os
import re
import signal
from pathlib import Path

import pytest
from harness import TIME, Dinit, Services, start

DINIT = Path(__file__).resolve().parent.parent / "dinit"
SOURCES = sorted(DINIT.rglob("*.py"))

#: subprocess functions that spawn and wait for a child themselves, and Popen, whose object waits for
#: (and reaps) its child in wait/poll/communicate and in its own clean-up.
SUBPROCESS_BANNED = {"run", "call", "check_call", "check_output", "getoutput", "getstatusoutput", "Popen"}
#: os functions that spawn and wait (system, popen's close, spawn* with P_WAIT) or reap any child.
OS_BANNED = {"system", "popen", "wait", "wait3", "wait4", *(f"spawn{s}" for s in
                                                           ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe"))}
ASYNCIO_BANNED = {"create_subprocess_exec", "create_subprocess_shell"}
#: Methods that, called with no arguments, wait for or poll a process (Popen and asyncio processes).
WAITING_METHODS = {"wait", "poll"}
#: Classes whose ``wait()`` is about threads, not processes.
THREADING_WAITERS = {"Condition", "Event", "Barrier", "Semaphore", "BoundedSemaphore"}
#: Modules allowed to call waitpid/waitid, with the reason.
REAPERS = {
    "supervisor.py": "the one reaper: waitid(WNOWAIT) then waitpid of that PID",
    "redirect.py": "waits for ptrace stops of a process it holds, handing any exit to the supervisor",
}
STD_STREAMS = {"stdout", "stderr", "__stdout__", "__stderr__"}


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of names and attributes, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := dotted(node.value)) is not None:
        return f"{base}.{node.attr}"
    return None


def violations(source: str, module: str) -> list[str]:
    """Every breach of the rules above in one module's source, as ``<line>: <what>``."""
    tree = ast.parse(source)
    found: list[str] = []
    #: local name -> module, for the modules whose functions are banned (``import x as y`` too)
    aliases = {"subprocess": "subprocess", "os": "os", "asyncio": "asyncio"}
    threading_objects: set[str] = set()
    #: every imported module's local name: ``select.poll()`` is a constructor, not a process poll
    imported: set[str] = set()

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{module}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                imported.add(name.asname or name.name.split(".")[0])
                root = name.name.split(".")[0]
                if root == "multiprocessing":
                    report(node, "import of multiprocessing (its processes are reaped by it, not dinit)")
                if name.name in aliases:
                    aliases[name.asname or name.name] = name.name
        elif isinstance(node, ast.ImportFrom) and node.module in ("subprocess", "os", "asyncio"):
            banned = {"subprocess": SUBPROCESS_BANNED, "os": OS_BANNED,
                      "asyncio": ASYNCIO_BANNED}[node.module]
            for name in node.names:
                if name.name in banned or name.name == "*":
                    report(node, f"from {node.module} import {name.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("multiprocessing"):
            report(node, "import from multiprocessing")
        elif isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
            constructor = dotted(node.value.func) or ""
            if constructor.rsplit(".", 1)[-1] in THREADING_WAITERS:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                threading_objects.update(name for target in targets if (name := dotted(target)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = aliases.get(dotted(node.value) or "")
            if owner == "subprocess" and node.attr in SUBPROCESS_BANNED:
                report(node, f"subprocess.{node.attr}")
            elif owner == "os" and node.attr in OS_BANNED:
                report(node, f"os.{node.attr}")
            elif node.attr in ASYNCIO_BANNED:
                report(node, f"{node.attr} (asyncio subprocess)")
            elif (owner == "os" and node.attr in ("waitpid", "waitid")
                  and module.rsplit("/", 1)[-1] not in REAPERS):
                report(node, f"os.{node.attr} outside the reaping modules {sorted(REAPERS)}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            receiver = dotted(func.value)
            if func.attr == "communicate":
                report(node, f"{receiver or '...'}.communicate()")
            elif (func.attr in WAITING_METHODS and not node.args and not node.keywords
                  and receiver not in threading_objects and receiver not in imported):
                report(node, f"{receiver or '...'}.{func.attr}() (waits for/polls a process)")
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("pthread_sigmask", "sigprocmask") and node.args and _is_sig_block(node.args[0]):
            report(node, f"{name}(SIG_BLOCK, ...)")
        if name == "set_blocking" and len(node.args) == 2 and _is_std_fd(node.args[0], module) \
                and isinstance(node.args[1], ast.Constant) and not node.args[1].value:
            report(node, f"set_blocking({ast.unparse(node.args[0])}, False) on dinit's stdout/stderr")
        if name == "fcntl" and len(node.args) >= 3 and _is_std_fd(node.args[0], module) \
                and "F_SETFL" in ast.unparse(node.args[1]) and "O_NONBLOCK" in ast.unparse(node.args[2]):
            report(node, f"fcntl({ast.unparse(node.args[0])}, F_SETFL, O_NONBLOCK) on dinit's stdout/stderr")
    return found


def _is_sig_block(node: ast.AST) -> bool:
    """``signal.SIG_BLOCK``, ``SIG_BLOCK`` or its value (0 on Linux)."""
    if isinstance(node, ast.Constant):
        return node.value == signal.SIG_BLOCK
    return (dotted(node) or "").rsplit(".", 1)[-1] == "SIG_BLOCK"


def _is_std_fd(node: ast.AST, module: str) -> bool:
    """An expression for fd 1 or 2: the constants, ``sys.stdout.fileno()`` and the like, and in
    writer.py (whose Writer exists only for fds 1 and 2) its ``self.fd``."""
    if isinstance(node, ast.Constant):
        return node.value in (1, 2)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "fileno":
        return (dotted(node.func.value) or "").rsplit(".", 1)[-1] in STD_STREAMS
    return module.endswith("writer.py") and dotted(node) in ("self.fd", "self._fd", "fd")


# -- the checker, checked --------------------------------------------------------------------------

BAD = [
    "import subprocess\nsubprocess.run(['true'])",
    "import subprocess\nsubprocess.call('true', shell=True)",
    "import subprocess\nsubprocess.check_call(['true'])",
    "import subprocess as sp\nsp.check_output(['true'])",
    "from subprocess import check_output",
    "import subprocess\np = subprocess.Popen(['true'])",
    "process.communicate(b'input')",
    "proc.wait()",
    "self.process.poll()",
    "import os\nos.system('true')",
    "import os\nos.popen('true')",
    "import os\nos.wait()",
    "import asyncio\nasyncio.create_subprocess_exec('true')",
    "from asyncio import create_subprocess_shell",
    "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})",
    "from signal import pthread_sigmask, SIG_BLOCK\npthread_sigmask(SIG_BLOCK, [15])",
    "import os\nos.set_blocking(1, False)",
    "import os\nos.set_blocking(2, False)",
    "import os, sys\nos.set_blocking(sys.stderr.fileno(), False)",
    "import fcntl, os\nfcntl.fcntl(1, fcntl.F_SETFL, flags | os.O_NONBLOCK)",
    "import os\nos.waitpid(-1, os.WNOHANG)",
    "import multiprocessing",
]
GOOD = [
    "import threading\nself._cond = threading.Condition(threading.Lock())\nself._cond.wait()",
    "import threading\ndone = threading.Event()\ndone.wait()",
    "import select\npoller = select.poll()\npoller.poll(0)",
    "self._epoll.poll(self._timeout())",
    "import signal\nsignal.pthread_sigmask(signal.SIG_SETMASK, [])",
    "import os\nos.set_blocking(read_end, False)",
    "import os\nos.set_blocking(3, False)",
    "import os\nos.posix_spawn('/bin/true', ['true'], {})",
    "'''subprocess.run(x) and proc.wait() in a docstring'''\n# os.system('x') in a comment",
]


@pytest.mark.parametrize("source", BAD)
def test_checker_catches(source: str) -> None:
    """The checker flags each banned construct (so a clean dinit/ means something)."""
    assert violations(source, "dinit/example.py"), source


@pytest.mark.parametrize("source", GOOD)
def test_checker_allows(source: str) -> None:
    """…and leaves alone what is not a process wait, a signal block or fd 1/2 made non-blocking."""
    assert violations(source, "dinit/example.py") == [], source


def test_checker_writer_fd() -> None:
    """In writer.py, whose writers are fds 1 and 2 only, making ``self.fd`` non-blocking is caught."""
    assert violations("import os\nos.set_blocking(self.fd, False)", "dinit/writer.py")
    assert violations("import os\nos.set_blocking(self.fd, False)", "dinit/other.py") == []


def test_checker_reapers() -> None:
    """waitpid/waitid are allowed in the reaping modules only."""
    assert violations("import os\nos.waitpid(pid, 0)", "dinit/supervisor.py") == []
    assert violations("import os\nos.waitpid(pid, 0)", "dinit/reparent.py")


# -- dinit's source --------------------------------------------------------------------------------


def test_sources_found() -> None:
    """The checks below see dinit's real modules (a wrong path would make them vacuous)."""
    names = {path.name for path in SOURCES}
    assert {"supervisor.py", "programs.py", "writer.py", "cli.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(DINIT)))
def test_one_owner_for_processes(path: Path) -> None:
    """No module of dinit waits for a child behind the supervisor's back, blocks signals, or makes
    fd 1/2 non-blocking (see the module docstring for why each matters)."""
    module = f"dinit/{path.relative_to(DINIT)}"
    found = violations(path.read_text(), module)
    assert found == [], ("one owner for processes: only the supervisor reaps, nothing blocks signals, "
                         "fd 1/2 stay blocking; breaches:\n" + "\n".join(found))


# -- a running dinit -------------------------------------------------------------------------------

O_NONBLOCK = os.O_NONBLOCK


def _fd_flags(pid: int, fd: int) -> int:
    text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    match = re.search(r"^flags:\s*([0-7]+)$", text, re.MULTILINE)
    assert match, text
    return int(match.group(1), 8)


def _blocked(pid: int) -> dict[str, int]:
    """The blocked-signal mask of every thread of ``pid``."""
    masks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        match = re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.MULTILINE)
        assert match
        masks[task.name] = int(match.group(1), 16)
    return masks


def test_running_dinit_blocks_nothing_and_keeps_fds_blocking(services: Services, pid1: bool) -> None:
    """At run time, with output flowing and signals handled: no thread of dinit blocks any signal,
    and dinit's fd 1 and fd 2 are not O_NONBLOCK."""
    services.add("talk", "trap 'exit 0' TERM\ntrap : HUP\n"
                         "while :; do echo '{\"n\":1}'; echo err >&2; sleep 0.01; done\n")
    dinit: Dinit = start(services, pid1=pid1, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb'"n":1', stream="stdout", count=5)
    dinit.wait_for(TIME + rb" talk/run: err\n", count=5)
    pid = dinit.pid
    dinit.signal(signal.SIGHUP)
    dinit.wait_for(rb"talk/run: forwarding signal 1 to PID")
    dinit.wait_for(TIME + rb" talk/run: err\n", count=10)
    for fd in (1, 2):
        assert not _fd_flags(pid, fd) & O_NONBLOCK, f"dinit's fd {fd} is O_NONBLOCK"
    masks = _blocked(pid)
    assert masks and all(mask == 0 for mask in masks.values()), masks
    dinit.signal(signal.SIGTERM)
    assert dinit.wait(10) == 0
