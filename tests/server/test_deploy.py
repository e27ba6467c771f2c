"""deploy/ describes the server as it is: probes that answer, the ports and settings `phloem serve` uses, files that
exist. (No Docker engine runs here, so the image itself is not built in the tests.)"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import httpx
import yaml

from semantic.limits import Limits
from server import cli
from server.auth import Authenticator

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "phloem.yaml").read_text()))
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVE_DEFAULTS = {name: p.default.default if hasattr(p.default, "default") else p.default
                  for name, p in inspect.signature(cli.serve).parameters.items()}


def container():
    deployment = next(m for m in MANIFESTS if m["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_probes_answer_on_a_running_server(live):
    spec = container()
    for probe in ("readinessProbe", "livenessProbe"):
        path = spec[probe]["httpGet"]["path"]
        assert httpx.get(live.url + path, timeout=30).status_code == 200, path


def test_ports_are_the_servers_defaults():
    defaults = {"http": 8000, "postgres": 15432}
    assert SERVE_DEFAULTS["port"] == defaults["http"] and SERVE_DEFAULTS["pg_port"] == defaults["postgres"]
    assert {p["name"]: p["containerPort"] for p in container()["ports"]} == defaults
    service = next(m for m in MANIFESTS if m["kind"] == "Service")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "postgres": "postgres"}
    assert COMPOSE["services"]["phloem"]["ports"] == ["8000:8000", "15432:15432"]
    assert re.search(r"^EXPOSE 8000 15432$", (DEPLOY / "Dockerfile").read_text(), re.M)


def test_settings_are_ones_the_server_reads():
    env = {e["name"]: e.get("value") for e in container()["env"]}
    assert set(env) == set(COMPOSE["services"]["phloem"]["environment"]) == {
        "PHLOEM_PG_USERS", "PHLOEM_JWT_SECRET", "PHLOEM_MAX_ROWS", "PHLOEM_MAX_BYTES"}
    assert Authenticator.from_env({"PHLOEM_JWT_SECRET": "0" * 64}).enabled  # a non-loopback serve starts
    limits = Limits.from_env({"PHLOEM_MAX_ROWS": env["PHLOEM_MAX_ROWS"], "PHLOEM_MAX_BYTES": env["PHLOEM_MAX_BYTES"]})
    assert (limits.rows, limits.bytes) == (1_000_000, 256 * 2**20)


def test_the_image_copies_what_exists_and_runs_the_cli():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for source in line.split():
            assert (DEPLOY.parent / source).exists(), source
    assert "phloem serve . --host 0.0.0.0" in dockerfile and "phloem serve --host 0.0.0.0" in dockerfile
    assert "host" in SERVE_DEFAULTS and "project" in SERVE_DEFAULTS
