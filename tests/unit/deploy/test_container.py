"""The Dockerfile and the compose file, checked offline (no Docker engine is needed or used).

These are not a substitute for building the image; they pin the properties
the deployment relies on: a pinned slim base, a multi-stage build, a numeric
non-root user matching the manifests' runAsUser, nothing fetched by URL, the
``driftline`` entrypoint, writable state directories, and a compose file
whose services, mounts, settings and commands are those of this repository.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli import build_parser
from streams.config import load_settings
from tests.unit.deploy.helpers import REPO, settings_env_names

COMPOSE_DIR = REPO / "deploy" / "compose"
UID = 10001


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()
                                             if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions((REPO / "Dockerfile").read_text())


def test_base_image_is_pinned_slim_python(dockerfile: list[tuple[str, str]]) -> None:
    args = dict(a.split("=", 1) for i, a in dockerfile if i == "ARG" and "=" in a)
    froms = [a.split()[0] for i, a in dockerfile if i == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the final image"
    for ref in froms:
        image = args.get(ref.strip("${}"), ref) if ref.startswith("$") else ref
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image


def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    last_from = max(n for n, (i, _) in enumerate(dockerfile) if i == "FROM")
    final = dockerfile[last_from:]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] == str(UID), "numeric, so runAsNonRoot can be checked"
    assert users[-1].split(":")[0] != "0"
    runs = " ".join(a for i, a in final if i == "RUN")
    for path in ("/var/lib/driftline", "/var/lib/driftline-notify"):  # writable under readOnlyRootFilesystem
        assert path in runs and f"chown {UID}:{UID}" in runs
    assert ("ENTRYPOINT", '["driftline"]') in final
    assert "--no-index" in runs, "the final stage installs only the wheels built in the first"


def test_nothing_is_fetched_by_url_and_no_secret_is_baked_in(dockerfile: list[tuple[str, str]]) -> None:
    for instruction, args in dockerfile:
        if instruction == "ADD":
            assert not re.search(r"https?://|git@", args), f"ADD of a URL: {args}"
        if instruction in ("ENV", "ARG"):
            assert not re.search(r"(?i)password|secret|token", args), args
        assert not re.search(r"(?i)curl |wget ", args) or instruction != "RUN", args


def test_build_context_is_only_what_the_image_needs() -> None:
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*", "allow-list: everything is excluded first"
    allowed = {p.removeprefix("!").rstrip("/") for p in ignore if p.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "streams"}
    copied = {a.split()[0] for i, a in instructions((REPO / "Dockerfile").read_text()) if i == "COPY"
              and not a.startswith("--from")}
    for source in copied:
        assert source.rstrip("/") in allowed, f"COPY {source} is not in the build context"


# -- compose ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((COMPOSE_DIR / "docker-compose.yaml").read_text())  # anchors and merge keys
    assert isinstance(data, dict)
    return data


def test_compose_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "worker", "notifier", "simulator", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep in deps:
            assert dep in services, f"{name} depends on unknown {dep}"
            if isinstance(deps, dict) and deps[dep].get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, which has none"
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image ({image})"


def test_compose_builds_this_repository_and_mounts_files_that_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if "build" in svc:
            context = (COMPOSE_DIR / svc["build"]["context"]).resolve()
            assert context == REPO and (context / svc["build"]["dockerfile"]).is_file(), name
            assert svc["read_only"] is True and "/tmp" in svc["tmpfs"], f"{name}: as in Kubernetes"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"


def test_compose_driftline_services_use_real_settings_and_commands(compose: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    known = settings_env_names()
    kafka = compose["services"]["kafka"]["environment"]
    internal = next(a for a in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",") if a.startswith("PLAINTEXT://"))
    for name in ("worker", "notifier", "simulator"):
        svc = compose["services"][name]
        env = {k: str(v) for k, v in svc["environment"].items()}
        assert set(env) <= known, f"{name}: unknown settings {set(env) - known}"
        assert env["DRIFTLINE_BOOTSTRAP_SERVERS"] == internal.removeprefix("PLAINTEXT://")
        build_parser().parse_args(svc["command"])
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", [])}
        if "DRIFTLINE_CONFIG" in env:
            config = COMPOSE_DIR / mounts[env["DRIFTLINE_CONFIG"]]
            s = load_settings(config, env={k: v for k, v in env.items() if k != "DRIFTLINE_CONFIG"})
            assert s.bootstrap_servers == "kafka:9092"
            if name == "worker":
                assert env["DRIFTLINE_DATA_DIR"] in mounts and f"{s.web_port}:{s.web_port}" in svc["ports"]
                assert str(s.web_port) in " ".join(svc["healthcheck"]["test"])
            if name == "notifier":
                delivery_log = s.extra["notify"]["delivery_log"]
                assert any(delivery_log.startswith(m + "/") for m in mounts), "the delivery log persists"
                port = svc["command"][svc["command"].index("--health-port") + 1]
                assert f":{port}/healthz" in " ".join(svc["healthcheck"]["test"])


def test_compose_prometheus_scrapes_the_worker_with_the_rules_of_deploy_prometheus(
        compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yaml").read_text())
    jobs = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
            for job in prom["scrape_configs"]}
    assert jobs["driftline-worker"] == ["worker:6066"], "the job name the rules and dashboards expect"
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["prometheus"]["volumes"])
    for rule_file in prom["rule_files"]:  # relative to /etc/prometheus, where the config is mounted
        source = mounts["/etc/prometheus/" + rule_file.split("/")[0]]
        assert (COMPOSE_DIR / source / rule_file.split("/", 1)[1]).is_file(), rule_file
    kafka_health = shlex.split(compose["services"]["kafka"]["healthcheck"]["test"][1])
    assert kafka_health[0].startswith("/opt/kafka/bin/")


def test_compose_prometheus_config_passes_promtool(compose: dict[str, Any], tmp_path: Path) -> None:
    """The config as Prometheus sees it in its container: rules mounted beside it."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (`make peers` installs Debian's prometheus package)")
    (tmp_path / "prometheus.yml").write_text((COMPOSE_DIR / "prometheus.yaml").read_text())
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["prometheus"]["volumes"])
    (tmp_path / "rules").symlink_to((COMPOSE_DIR / mounts["/etc/prometheus/rules"]).resolve())
    done = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
