"""examples/kubernetes/pod.yaml is valid YAML whose probes point where dinit answers (§13), with a
grace period that leaves dinit's own deadlines room."""

from __future__ import annotations

from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "kubernetes"


def _env(container: dict[str, object]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}  # type: ignore[attr-defined]


def _pod(name: str) -> dict[str, object]:
    pod = yaml.safe_load((EXAMPLES / name).read_text())
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    return pod  # type: ignore[no-any-return]


def _grace_leaves_room(pod: dict[str, object], container: dict[str, object]) -> None:
    env = _env(container)
    grace = pod["spec"]["terminationGracePeriodSeconds"]  # type: ignore[index]
    assert grace > float(env["DINIT_STOP_DELAY"]) + float(env["DINIT_TIMEOUT"])


def test_pod_with_http_probes() -> None:
    pod = _pod("pod.yaml")
    [http] = pod["spec"]["containers"]  # type: ignore[index]
    env = _env(http)
    port = int(env["DINIT_HTTP_ADDR"].rpartition(":")[2])
    assert [p["containerPort"] for p in http["ports"] if p["name"] == "health"] == [port]
    assert http["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert http["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert http["livenessProbe"]["httpGet"]["path"] == "/livez"
    _grace_leaves_room(pod, http)


def test_pod_with_ready_file_probes() -> None:
    pod = _pod("pod-ready-file.yaml")
    [container] = pod["spec"]["containers"]  # type: ignore[index]
    command = ["test", "-f", _env(container)["DINIT_READY_FILE"]]
    assert container["startupProbe"]["exec"]["command"] == command
    assert container["readinessProbe"]["exec"]["command"] == command
    _grace_leaves_room(pod, container)
