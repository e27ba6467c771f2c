"""deploy/ describes the server as it is: manifests the Kubernetes schemas accept, a compose file the compose
specification accepts, probes that answer, the ports and settings `phloem serve` uses, and an image whose install
steps, run here in a clean virtual environment, give a `phloem` that loads the demo into PostgreSQL, serves it and
refreshes it. (No Docker engine runs here, so the image itself is not built.)"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import venv
from importlib import resources
from pathlib import Path

import httpx
import jsonschema
import jwt
import kubernetes_validate
import pytest
import yaml

from semantic.limits import Limits
from semantic.project.load import load_project
from server import cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "phloem.yaml").read_text()))
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
SERVE_DEFAULTS = {name: p.default.default if hasattr(p.default, "default") else p.default
                  for name, p in inspect.signature(cli.serve).parameters.items()}
KUBERNETES = "1.37.0"  # the newest schemas kubernetes-validate ships
SECRET = "a-shared-secret-of-at-least-32-bytes!!"


def manifest(kind: str, name: str) -> dict:
    return next(m for m in MANIFESTS if m["kind"] == kind and m["metadata"]["name"] == name)


def container(name: str = "phloem") -> dict:
    return manifest("Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def stages() -> list[str]:
    """The Dockerfile's stages, each its text from its FROM on."""
    return ["FROM" + s for s in re.split(r"^FROM", DOCKERFILE, flags=re.M)[1:]]


def read_by_code() -> set[str]:
    text = "\n".join(p.read_text() for folder in ("semantic", "server") for p in (ROOT / folder).rglob("*.py"))
    return set(re.findall(r"PHLOEM_[A-Z_]+", text))


# ------------------------------------------------------------------ schemas


def test_every_manifest_is_valid_kubernetes():
    kinds = [m["kind"] for m in MANIFESTS]
    assert sorted(kinds) == ["ConfigMap", "ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler",
                             "Secret", "Service"]
    for m in MANIFESTS:  # strict: an unknown field is an error, as `kubectl apply` makes it
        kubernetes_validate.validate(m, KUBERNETES, strict=True)
    broken = json.loads(json.dumps(manifest("Deployment", "phloem")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def compose_schema() -> dict:
    """The compose specification's JSON schema as check-jsonschema vendors it (offline; Apache-2.0)."""
    return json.loads((resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())


def test_the_compose_file_is_valid_compose():
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert list(validator.iter_errors(COMPOSE)) == []
    assert set(COMPOSE["services"]) == {"warehouse", "demo", "phloem", "worker"}
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["worker"]["depends_on"]["demo"]["condition"] = "service_finished"
    assert list(validator.iter_errors(broken))


# ------------------------------------------------------------------ what the manifests say about the server


def test_probes_answer_on_a_running_server(live):
    spec = container()
    for probe in ("readinessProbe", "livenessProbe"):
        path = spec[probe]["httpGet"]["path"]
        assert httpx.get(live.url + path, timeout=30).status_code == 200, path
    assert (spec["readinessProbe"]["httpGet"]["path"], spec["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz", "/healthz")


def test_ports_are_the_servers_defaults():
    defaults = {"http": 8000, "postgres": 15432}
    assert SERVE_DEFAULTS["port"] == defaults["http"] and SERVE_DEFAULTS["pg_port"] == defaults["postgres"]
    assert {p["name"]: p["containerPort"] for p in container()["ports"]} == defaults
    service = manifest("Service", "phloem")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "postgres": "postgres"}
    assert service["spec"]["selector"] == manifest("Deployment", "phloem")["spec"]["template"]["metadata"]["labels"]
    assert COMPOSE["services"]["phloem"]["ports"] == ["8000:8000", "15432:15432"]
    assert re.search(r"^EXPOSE 8000 15432$", stages()[-1], re.M)


def test_settings_are_ones_the_server_reads():
    known = read_by_code()
    compose_env = COMPOSE["x-phloem"]["environment"]
    for env in (container()["env"], container("phloem-worker")["env"]):
        assert {e["name"] for e in env} - known <= {"PHLOEM_WAREHOUSE_DSN"}
    assert set(compose_env) - known == {"PHLOEM_WAREHOUSE_DSN"}
    # the one setting of our own: the DSN phloem.yml names, so no password is written in a file
    assert "${PHLOEM_WAREHOUSE_DSN}" in manifest("ConfigMap", "phloem-settings")["data"]["phloem.yml"]
    assert "$${PHLOEM_WAREHOUSE_DSN}" in " ".join(COMPOSE["services"]["demo"]["command"])
    env = {e["name"]: e.get("value") for e in container()["env"]}
    limits = Limits.from_env({"PHLOEM_MAX_ROWS": env["PHLOEM_MAX_ROWS"], "PHLOEM_MAX_BYTES": env["PHLOEM_MAX_BYTES"]})
    assert (limits.rows, limits.bytes) == (1_000_000, 256 * 2**20)
    secret = manifest("Secret", "phloem")["stringData"]
    mounted = {v["name"]: v for v in manifest("Deployment", "phloem")["spec"]["template"]["spec"]["volumes"]}
    files = {i["path"] for i in mounted["credentials"]["secret"]["items"]}
    for name in ("PHLOEM_API_KEYS_FILE", "PHLOEM_PG_USERS_FILE"):
        assert Path(env[name]).parent == Path("/etc/phloem") and Path(env[name]).name in files & set(secret)


def test_replicas_are_stateless_and_unprivileged():
    for name in ("phloem", "phloem-worker"):
        pod = manifest("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1000
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
        assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert {v["name"]: v for v in pod["volumes"]}["project"] == {"name": "project", "emptyDir": {}}
    hpa = manifest("HorizontalPodAutoscaler", "phloem")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "phloem" and hpa["minReplicas"] >= 2
    assert container("phloem-worker")["command"][:2] == ["phloem", "worker"]
    assert re.search(r"^USER 1000", stages()[-1], re.M) and "HEALTHCHECK" in stages()[-1]


def test_the_config_maps_hold_a_project_that_loads(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "phloem.yml").write_text(manifest("ConfigMap", "phloem-settings")["data"]["phloem.yml"])
    for name, text in manifest("ConfigMap", "phloem-models")["data"].items():
        (tmp_path / "models" / name).write_text(text)
    monkeypatch.setenv("PHLOEM_WAREHOUSE_DSN", "postgresql://u:p@warehouse/shop")
    model = load_project(tmp_path)
    assert model.settings.warehouse.engine == "postgres" and set(model.rollups) == {"orders_daily"}
    assert model.datasets["orders"].refresh == "15 minutes"


# ------------------------------------------------------------------ the image's steps, in a clean venv


def test_the_image_copies_what_exists():
    for line in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for source in line.split():
            assert (ROOT / source).exists(), source
    assert "phloem serve . --host 0.0.0.0" in DOCKERFILE and "phloem serve --host 0.0.0.0" in DOCKERFILE
    assert "host" in SERVE_DEFAULTS and "project" in SERVE_DEFAULTS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The build stage's steps run here: its COPY lines into a folder, its RUN in a brand-new venv (for /opt/phloem).
    Returns the venv and the final stage's environment (its PATH puts that venv first)."""
    build, final = stages()
    src, target = tmp_path / "src", tmp_path / "opt-phloem"
    src.mkdir()
    for line in re.findall(r"^COPY (.+) (\S+)$", build, re.M):
        *sources, dest = line[0].split() + [line[1]]
        for source in sources:
            to = src / dest / Path(source).name if dest.endswith("/") else src / dest
            subprocess.run(["cp", "-r", str(ROOT / source), str(to)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not p.startswith(sys.prefix))
    for names in re.findall(r"^ENV (.+)$", build, re.M):
        env.update(dict(kv.split("=", 1) for kv in shlex.split(names)))
    env.pop("PIP_NO_CACHE_DIR", None)  # pip's cache changes no installed byte, only how long this takes
    (run,) = re.findall(r"^RUN (.+)$", build, re.M)
    venv.create(target, with_pip=False)  # `python -m venv` of the step, with this machine's interpreter
    run = run.replace("python -m venv /opt/phloem && ", f"{sys.executable} -m venv {target} && ")
    subprocess.run(run.replace("/opt/phloem", str(target)), shell=True, cwd=src, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for names in re.findall(r"^ENV (.+)$", final, re.M):
        env.update({k: v.replace("/opt/phloem", str(target)).replace("$PATH", env["PATH"])
                    for k, v in (kv.split("=", 1) for kv in shlex.split(names))})
    return target, env


def test_the_images_install_loads_the_demo_into_postgres_serves_it_and_refreshes_it(tmp_path, fresh_database):
    target, env = image(tmp_path)
    assert (target / "bin" / "phloem").exists() and not (target / "src").exists()
    env["PHLOEM_WAREHOUSE_DSN"] = fresh_database("compose")
    project = tmp_path / "project"  # the image's WORKDIR, empty at first start: compose's `demo` fills it
    project.mkdir()
    demo = COMPOSE["services"]["demo"]["command"]
    assert demo[:2] == ["sh", "-c"] and "--scale 100000" in demo[2]
    first = demo[2].replace("$$", "$").replace("--scale 100000", "--scale 300")  # compose's own $$ escape
    done = subprocess.run(["sh", "-c", first], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "${PHLOEM_WAREHOUSE_DSN}" in (project / "phloem.yml").read_text()  # the password stays in the env
    again = subprocess.run(["sh", "-c", first], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == ""  # second start: the project is there, nothing is done

    http, pg = free_port(), free_port()
    serve = [*COMPOSE["services"]["phloem"]["command"], "--port", str(http), "--pg-port", str(pg)]
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(serve, cwd=project, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**env, "PHLOEM_PG_USERS": "analyst:a-long-password", "PHLOEM_JWT_SECRET": SECRET})
    try:
        (check,) = re.findall(r'CMD python -c "(.+)"$', stages()[-1], re.M)  # the image's HEALTHCHECK
        check = check.replace("127.0.0.1:8000", f"127.0.0.1:{http}")
        deadline = time.monotonic() + 120
        while subprocess.run([target / "bin" / "python", "-c", check], capture_output=True).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{http}/readyz", timeout=30).status_code == 200
        url, question = f"http://127.0.0.1:{http}/api/v1/query", {"metrics": ["orders"]}
        assert httpx.post(url, json=question, timeout=30).status_code == 401  # not loopback-only: auth is on
        token = jwt.encode({"sub": "ana", "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")
        answer = httpx.post(url, json=question, headers={"authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["rows"] == [[300]], answer.text
        worker = [*COMPOSE["services"]["worker"]["command"], "--once"]
        done = subprocess.run(worker, cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        proc.terminate()
        proc.wait(30)
