"""The bundled example services (the README's first command runs them) behave as documented."""

from __future__ import annotations

import signal
from pathlib import Path

from harness import Services, start

EXAMPLES = Services(Path(__file__).resolve().parent.parent / "etc-service-examples")


def test_examples_run_as_pid1_and_stop_on_ctrl_c() -> None:
    """JSON from `api`, the logger's JSON for `nginx-like`, text on stderr from `worker`, `cron`
    disabling itself without a teardown; Ctrl-C (SIGINT) runs worker's stop hook
    (``terminate``, stage ``term``), exit 0."""
    dinit = start(EXAMPLES, DINIT_LOG_LEVEL="info")
    dinit.wait_for(rb'"service":"api","stage":"run"', stream="stdout")
    dinit.wait_for(rb'\{"access":"GET /index.html 200 [^"]*","service":"nginx-like","stage":"run"',
                   stream="stdout")
    dinit.wait_for(rb"worker/run: worker started, waiting for jobs")
    dinit.wait_for(rb"cron/run: PID \d+ finished and disabled itself")
    dinit.signal(signal.SIGINT)
    assert dinit.wait() == 0
    assert b"worker/term: running with PID" in dinit.stderr
    assert dinit.service_lines("worker/run")[-1] == b"worker got SIGTERM, finishing current job"
    hook_lines = [line for line in dinit.json_lines() if line["stage"] == "term"]
    assert hook_lines and hook_lines[0]["msg"] == "draining worker"
    assert dinit.messages("info")[-1] == b"dinit exiting with status 0"
    assert dinit.messages("warning") == [], "the examples leave no process behind to be reparented"
    assert b"Terminated" not in dinit.stderr, "the shells' job reports are not part of the demo"
