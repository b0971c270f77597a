"""End to end with real Debian programs, as in a real image (§2, §4, §5, §16): nginx (``daemon off;``,
stopped by a ``terminate`` hook doing ``nginx -s quit``), Python's HTTP server and Debian's cron,
under dinit as PID 1. Real HTTP requests (urllib) reach both servers; every stdout line is JSON;
``docker stop`` (SIGTERM) stops everything with exit 0 and no warning or error from dinit.

Nothing depends on the host's configuration: nginx gets a configuration, prefix, pid file and temp
paths of its own in the test's directory, and cron's run script bind-mounts empty crontabs (and a
``/run`` of its own, for cron's pid file lock) over the host's, in the mount namespace the PID 1 mode
already gives dinit (``unshare --mount-proc``), so the host's cron jobs cannot run and tests running
in parallel do not fight over ``/run/crond.pid``.

The programs come from Debian packages (nginx-light, cron) that .ci/run installs; without them the
test is skipped on a developer's machine and fails in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest
from harness import TIME, Dinit, Services, poll, start

SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def _program(name: str, package: str) -> str:
    """The absolute path of a real program, or skip (fail in CI, which must install it)."""
    found = shutil.which(name, path=SYSTEM_PATH)
    if found is None:
        reason = f"{name} not installed (Debian package {package}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    log_format json escape=json '{{"remote":"$remote_addr","request":"$request","status":$status}}';
    access_log /dev/stdout json;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
    }}
}}
"""


def _nginx(services: Services, prefix: Path, port: int) -> None:
    """nginx in the foreground as ``run``; ``terminate`` asks it to quit gracefully, as images do."""
    nginx = _program("nginx", "nginx-light")
    (prefix / "www").mkdir(parents=True)
    (prefix / "www" / "index.html").write_text("served by nginx\n")
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port))
    command = f"{nginx} -p {prefix} -e stderr -c {conf}"
    services.add("nginx", f"exec {command}\n", terminate=f"exec {command} -s quit\n")


def _http_server(services: Services, root: Path, port: int) -> None:
    """Python's HTTP server logs requests on stderr but prints its banner on stdout, which in JSON mode
    would be a ``not JSON stdout`` warning (§4.3): its run sends stdout to stderr, as an image would."""
    root.mkdir(parents=True)
    (root / "index.html").write_text("served by python\n")
    services.add("pyhttp", f"exec {sys.executable} -u -m http.server --bind 127.0.0.1 "
                           f"--directory {root} {port} >&2\n")


def _cron(services: Services, root: Path) -> None:
    """Debian's cron in the foreground, seeing empty crontabs and a private /run (see the module)."""
    cron = _program("cron", "cron")
    for directory in ("cron.d", "crontabs", "run"):
        (root / directory).mkdir(parents=True)
    (root / "crontab").write_text("# no jobs\n")
    mounts = "".join(f"mount --bind {root / source} {target}\n" for source, target in (
        ("crontab", "/etc/crontab"), ("cron.d", "/etc/cron.d"),
        ("crontabs", "/var/spool/cron/crontabs"), ("run", "/run")) if os.path.exists(target))
    services.add("cron", f"set -e\n{mounts}exec {cron} -f\n")


def _get(port: int) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as response:
            body: bytes = response.read()
            return body
    except OSError:
        return None


def _running(dinit: Dinit, name: str) -> int:
    [match] = dinit.wait_for(name.encode() + rb"/run: running with PID (\d+)")
    return int(match.group(1))


def test_nginx_python_and_cron_as_pid1(services: Services, tmp_path: Path) -> None:
    """A small real image: both HTTP servers answer real requests, cron stays up, every stdout line
    is JSON (nginx's access log lines keep their own keys), and SIGTERM stops all three (nginx through
    its ``terminate`` hook) with exit 0 and not one warning or error line from dinit."""
    nginx_port, python_port = _free_port(), _free_port()
    _nginx(services, tmp_path / "nginx", nginx_port)
    _http_server(services, tmp_path / "www", python_port)
    _cron(services, tmp_path / "cron")
    dinit = start(services, DINIT_LOG_LEVEL="info")
    for name in ("cron", "nginx", "pyhttp"):
        _running(dinit, name)

    assert poll(lambda: _get(nginx_port), message="nginx to answer") == b"served by nginx\n"
    assert poll(lambda: _get(python_port), message="python to answer") == b"served by python\n"
    dinit.wait_for(rb'"request":"GET /index.html HTTP/1.1","status":200,"service":"nginx"',
                   stream="stdout")
    dinit.wait_for(TIME + rb' pyhttp/run: 127\.0\.0\.1 - - \[.*\] "GET /index\.html HTTP/1\.1" 200 ')
    assert dinit.popen.poll() is None
    assert b"cron/run: PID" not in dinit.stderr, "cron must still be running"

    dinit.signal(signal.SIGTERM)
    assert dinit.wait() == 0, dinit.stderr.decode(errors="replace")
    for line in dinit.stdout.splitlines():
        orjson.loads(line)
    assert dinit.messages("warning") == [] and dinit.messages("error") == [], dinit.stderr.decode()
    info = dinit.messages("info")
    assert re.search(rb"nginx/term: running with PID \d+", dinit.stderr)
    assert not any(line.startswith(b"nginx/run: sending SIGTERM") for line in info)
    assert any(re.fullmatch(rb"nginx/run: PID \d+ finished with status 0", line) for line in info)
    assert info[-1] == b"dinit exiting with status 0"
    program_problems = re.search(TIME + rb" \S+/\S+: .*\b(warn|emerg|alert|crit)\b", dinit.stderr)
    assert not program_problems, dinit.stderr.decode()
