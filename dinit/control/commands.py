"""The client subcommands of ``dinit`` (§12): argument parsing, human and JSON output, exit codes.

Human output follows the tools users know: ``status`` prints runit's ``sv status`` lines, ``list``
a supervisorctl-style table, ``start``/``stop``/``restart`` sv's ``ok:``/``timeout:``/``fail:``
lines. ``--json`` prints one JSON document (an array of service objects for status and list, the
result object otherwise; an error object on failure).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from . import protocol
from .client import ANSWER_TIMEOUT, Client, Unreachable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
#: Seconds start/stop/restart wait by default (§12, as runit's sv).
DEFAULT_WAIT = 7.0

USAGE = """\
usage: dinit status [NAME...] [--json]
       dinit list [--json]
       dinit start|stop|restart NAME... [-w SEC] [--json]
       dinit signal SIG NAME...|all [--json]
       dinit submit [--name N] [--critical] [--wait] [--json] [--] CMD [ARG...]
       dinit reload [--json]
       dinit shutdown [--json]
       dinit check [NAME...] [--wait SEC] [--alive] [--json]
       dinit events [--no-replay]
       dinit pid NAME [--json]
       dinit version [--json]

Talks to the running dinit through its control socket (DINIT_SOCKET, else /run/dinit/control.sock,
then /dev/shm/dinit/control.sock). Exit codes: 0 done, 1 failed or timed out, 2 usage, 3 not running
(status, pid), 4 unknown service (status, pid) or dinit unreachable. check exits only 0 (ready,
alive) or 1 (anything else, dinit unreachable included).
"""


class Usage(Exception):
    """A command line the client does not understand (exit 2)."""


class Options:
    """What a subcommand's command line says."""

    def __init__(self) -> None:
        self.json = False
        self.wait: float = DEFAULT_WAIT
        self.name: str | None = None
        self.critical = False
        self.wait_job = False
        self.words: list[str] = []
        self.alive = False
        self.no_replay = False


def _seconds(option: str, text: str) -> float:
    """The value of ``option`` (named as the user wrote it: ``-w`` or ``--wait``)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise Usage(f"{option}: {text!r} is not a number of seconds (0 to 86400)")
    return value


def parse(command: str, args: list[str]) -> Options:
    """Options may come anywhere among the names; ``submit`` stops at ``--`` or its command."""
    options = Options()
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            options.words += args[index:]
            break
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(EXIT_OK)
        if arg == "--json":
            options.json = True
        elif command in ("start", "stop", "restart") and (arg in ("-w", "--wait") or arg.startswith("-w")):
            if arg in ("-w", "--wait"):
                if index >= len(args):
                    raise Usage(f"{arg} needs a number of seconds")
                options.wait, index = _seconds(arg, args[index]), index + 1
            else:
                options.wait = _seconds("-w", arg[2:])
        elif command == "check" and arg == "--wait":
            if index >= len(args):
                raise Usage("--wait needs a number of seconds")
            options.wait, index = _seconds(arg, args[index]), index + 1
        elif command == "check" and arg == "--alive":
            options.alive = True
        elif command == "events" and arg == "--no-replay":
            options.no_replay = True
        elif command == "submit" and arg == "--name":
            if index >= len(args):
                raise Usage("--name needs a name")
            options.name, index = args[index], index + 1
        elif command == "submit" and arg == "--critical":
            options.critical = True
        elif command == "submit" and arg == "--wait":
            options.wait_job = True
        elif arg.startswith("-") and arg != "-" and not (command == "signal" and not options.words):
            raise Usage(f"{command}: unknown option {arg!r}")
        else:
            options.words.append(arg)
            if command == "submit":
                options.words += args[index:]
                break
    return options


# -- human formats -------------------------------------------------------------------------------


def _exit_words(last: dict[str, int] | None) -> str:
    if last is None:
        return ""
    return f"exit {last['code']}" if "code" in last else f"signal {last['signal']}"


def sv_line(service: dict[str, Any]) -> str:
    """runit's ``sv status`` form: ``run: web: (pid 123) 45s, ready 44s; run: log: (pid 124) 45s``,
    ``down: cron: 12s, normally up, disabled (exit 115)``. A run counts from its start, as runit's
    does; ``ready`` only for a run that had readiness sources to pass (one without is ready at once,
    and runit users expect its plain line)."""
    name, state, seconds = service["name"], service["state"], int(service["seconds"])
    if service["pid"] is not None:
        text = f"run: {name}: (pid {service['pid']}) {int(service['run_seconds'])}s"
        if service["ready_seconds"] is not None:
            text += f", ready {int(service['ready_seconds'])}s"
        elif state == "starting":
            text += ", starting"
        elif state == "stopping":
            text += f", stopping ({service['reason']})"
    else:
        text = f"down: {name}: {seconds}s"
        if service["origin"] == "dir" and service["normally"] == "up":
            text += ", normally up"
        if state == "down":
            text += ", held down" if service["held"] else ""
        elif state == "pending":
            text += ", pending"
        else:
            words = _exit_words(service["last_exit"])
            text += f", {state}" + (f" ({words})" if words else "")
    logger = service["logger"]
    if logger is not None:
        age = f" {int(logger['seconds'])}s" if logger["seconds"] is not None else ""
        text += f"; run: log: (pid {logger['pid']}){age}"
    return text


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _list_description(service: dict[str, Any]) -> str:
    """supervisorctl's description column: ``pid 123, uptime 0:00:45`` while running (since ``run``
    started, whenever it became ready)."""
    state = service["state"]
    if service["pid"] is not None:
        text = f"pid {service['pid']}, uptime {_clock(service['run_seconds'])}"
        return text + (f", stopping ({service['reason']})" if state == "stopping" else "")
    if state == "down":
        return "held down" if service["held"] else "down file"
    if state == "pending":
        return "not runnable yet"
    last = service["last_exit"]
    how = "" if last is None else (f"exited with status {last['code']}, " if "code" in last
                                   else f"killed by signal {last['signal']}, ")
    return f"{how}{_clock(service['seconds'])} ago"


def list_table(services: list[dict[str, Any]]) -> str:
    width = max([len(service["name"]) for service in services] + [16])
    return "".join(f"{s['name']:<{width}}   {s['state'].upper():<10} {_list_description(s)}\n"
                   for s in services)


# -- running one subcommand ----------------------------------------------------------------------


class Run:
    """One subcommand: its options, its connection, and how it prints."""

    def __init__(self, command: str, options: Options) -> None:
        self.command = command
        self.options = options
        self.client: Client | None = None

    def ask(self, cmd: str, args: dict[str, Any], timeout: float | None = ANSWER_TIMEOUT) -> dict[str, Any]:
        if self.client is None:
            self.client = Client()
        return self.client.request(cmd, args, timeout)

    def out(self, text: str) -> None:
        sys.stdout.write(text)

    def json_out(self, value: Any, compact: bool = False) -> None:
        separators = (",", ":") if compact else None
        sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=separators) + "\n")

    def failed(self, answer: dict[str, Any], unknown_exit: int = EXIT_FAILED) -> int:
        """Print an error answer; its exit code (bad-request is a usage error, busy unreachable)."""
        error = answer["error"]
        if self.options.json:
            self.json_out(error)
        sys.stderr.write(f"dinit {self.command}: {error['message']}\n")
        code = error["code"]
        if code == protocol.BAD_REQUEST:
            return EXIT_USAGE
        if code == protocol.BUSY:
            return EXIT_UNREACHABLE
        return unknown_exit if code == protocol.UNKNOWN_SERVICE else EXIT_FAILED

    def result(self, answer: dict[str, Any]) -> Any:
        if self.options.json:
            self.json_out(answer["result"])
        return answer["result"]


def _status(run: Run) -> int:
    answer = run.ask("status", {"names": run.options.words})
    if not answer["ok"]:
        return run.failed(answer, EXIT_UNREACHABLE)
    services = answer["result"]["services"]
    if run.options.json:
        run.json_out(services)
    else:
        run.out("".join(sv_line(service) + "\n" for service in services))
    return EXIT_OK if all(service["state"] == "running" for service in services) else EXIT_NOT_RUNNING


def _list(run: Run) -> int:
    if run.options.words:
        raise Usage("list takes no names (see dinit status NAME...)")
    answer = run.ask("list", {})
    if not answer["ok"]:
        return run.failed(answer)
    services = answer["result"]["services"]
    if run.options.json:
        run.json_out(services)
    else:
        run.out(list_table(services))
    return EXIT_OK


def _control(run: Run) -> int:
    """start, stop, restart: sv's ``ok:``, ``timeout:`` (still waiting when -w passed), ``fail:``."""
    if not run.options.words:
        raise Usage(f"{run.command} needs at least one service name")
    wait = run.options.wait
    answer = run.ask(run.command, {"names": run.options.words, "wait": wait}, timeout=wait + ANSWER_TIMEOUT)
    if not answer["ok"] and answer["error"]["code"] != protocol.TIMEOUT:
        return run.failed(answer)
    timed_out = not answer["ok"]
    services = answer["error"]["services"] if timed_out else answer["result"]["services"]
    if run.options.json:
        run.json_out(answer["error"] if timed_out else answer["result"])
    wanted = "down" if run.command == "stop" else "running"
    code = EXIT_OK
    for service in services:
        done = service["state"] == wanted and (wanted == "running" or service["logger"] is None)
        if wait == 0:
            continue
        word = "ok" if done else ("timeout" if timed_out else "fail")
        code = code if done else EXIT_FAILED
        if not run.options.json:
            run.out(f"{word}: {sv_line(service)}\n")
    return code


def _signal(run: Run) -> int:
    if len(run.options.words) < 2:
        raise Usage("signal needs a signal and at least one service name (or all)")
    signum, *names = run.options.words
    answer = run.ask("signal", {"signal": signum, "names": names})
    if not answer["ok"]:
        return run.failed(answer)
    run.result(answer)
    return EXIT_OK


def _submit(run: Run) -> int:
    options = run.options
    if not options.words:
        raise Usage("submit needs a command")
    args = {"argv": options.words, "name": options.name, "critical": options.critical,
            "wait": options.wait_job, "cwd": os.getcwd()}
    answer = run.ask("submit", args, timeout=None if options.wait_job else ANSWER_TIMEOUT)
    if not answer["ok"]:
        return run.failed(answer)
    result = run.result(answer)
    service = result["service"]
    if options.wait_job:
        return int(result["status"]) if result["status"] is not None else EXIT_FAILED
    if not options.json:
        run.out(f"{service['name']}: started with PID {service['pid']}\n")
    return EXIT_OK


def _reload(run: Run) -> int:
    """What the rescan changed, one §11 line per service (``web: added, starting``)."""
    if run.options.words:
        raise Usage("reload takes no arguments")
    answer = run.ask("reload", {})
    if not answer["ok"]:
        return run.failed(answer)
    changes = run.result(answer)["changes"]
    if not run.options.json:
        run.out("".join(f"{change['name']}: {change['action']}\n" for change in changes) or "no changes\n")
    return EXIT_OK


def check_line(result: dict[str, Any]) -> str:
    """``ok: 3 services ready`` / ``not ready: api (starting 12s, check: exit 1)`` (§13)."""
    if "alive" in result:
        return "ok: alive" if result["alive"] else f"not alive: the container is {result['container']}"
    if result["ready"]:
        count = result["ready_services"]
        return f"ok: {count} service{'' if count == 1 else 's'} ready"
    waiting = [f"{s['name']} ({s['state']} {int(s['seconds'])}s" + (f", {s['detail']})" if s["detail"]
                                                                       else ")") for s in result["not_ready"]]
    return "not ready: " + (", ".join(waiting) or f"the container is {result['container']}")


def _check(run: Run) -> int:
    """Exit only 0 or 1, so ``dinit check --wait 60 db || exit 1`` and probes read it simply."""
    options = run.options
    if options.alive and (options.words or options.wait != DEFAULT_WAIT):
        raise Usage("--alive takes no names and no --wait")
    wait = 0.0 if options.wait == DEFAULT_WAIT else options.wait
    args = {"alive": True} if options.alive else {"names": options.words, "wait": wait}
    answer = run.ask("check", args, timeout=wait + ANSWER_TIMEOUT)
    if not answer["ok"]:
        run.failed(answer)
        return EXIT_FAILED
    result = run.result(answer)
    if not options.json:
        run.out(check_line(result) + "\n")
    return EXIT_OK if result.get("alive", result.get("ready")) else EXIT_FAILED


def _events(run: Run) -> int:
    """JSON lines, each written as it comes, until dinit exits (0) or refuses (1)."""
    if run.options.words:
        raise Usage("events takes no arguments")
    run.client = run.client or Client()
    for message in run.client.stream("events", {"no_replay": run.options.no_replay}):
        if message.get("ok") is False:
            return run.failed(message)
        run.json_out(message, compact=True)  # one line per event, as compact as the web hook's body
        sys.stdout.flush()
    return EXIT_OK


def _simple(cmd: str, show: Callable[[dict[str, Any]], str] | None = None) -> Callable[[Run], int]:
    def command(run: Run) -> int:
        if run.options.words:
            raise Usage(f"{cmd} takes no arguments")
        answer = run.ask(cmd, {})
        if not answer["ok"]:
            return run.failed(answer)
        result = run.result(answer)
        if show is not None and not run.options.json:
            run.out(show(result))
        return EXIT_OK

    return command


def _pid(run: Run) -> int:
    if len(run.options.words) != 1:
        raise Usage("pid needs exactly one service name")
    answer = run.ask("pid", {"names": run.options.words})
    if not answer["ok"]:
        return run.failed(answer, EXIT_UNREACHABLE)
    pid = run.result(answer)["pid"]
    if pid is None:
        return EXIT_NOT_RUNNING
    if not run.options.json:
        run.out(f"{pid}\n")
    return EXIT_OK


COMMANDS: dict[str, Callable[[Run], int]] = {
    "status": _status, "list": _list, "start": _control, "stop": _control, "restart": _control,
    "signal": _signal, "submit": _submit, "reload": _reload, "shutdown": _simple("shutdown"),
    "check": _check, "events": _events,
    "pid": _pid, "version": _simple("version", lambda result: f"dinit {result['version']}\n"),
}


def main(args: list[str]) -> NoReturn:
    """``dinit <subcommand> ...``: run it and exit with its code."""
    command, rest = args[0], args[1:]
    try:
        run = Run(command, parse(command, rest))
        code = COMMANDS[command](run)
    except Usage as error:
        sys.stderr.write(f"dinit {command}: {error}\n" + ("" if command == "check" else USAGE))
        code = EXIT_FAILED if command == "check" else EXIT_USAGE
    except Unreachable as error:
        sys.stderr.write(f"dinit {command}: {error}\n")
        code = EXIT_FAILED if command == "check" else EXIT_UNREACHABLE
    except BrokenPipeError:
        code = EXIT_FAILED
    except SystemExit as done:  # --help
        code = int(done.code or 0)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or EXIT_FAILED
    # Exit at once, with the connection still open until the process is gone: a dinit that is PID 1
    # waits for this hang-up before exiting, and its exit kills whatever of its namespace is left.
    os._exit(code)
