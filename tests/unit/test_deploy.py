"""deploy/: the manifests parse and say what they must; the table loads with their environment.

Docker does not run where these tests run, so the image itself is not built here: these
checks read the Dockerfile and the manifests as text and YAML.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from mini_llm.access import exposure_problem
from mini_llm.config import load_config
from mini_llm.source import ConfigError

from ..helpers import REPO

DEPLOY = REPO / "deploy"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text(encoding="utf-8")) if d]


def _kube() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in _docs("kubernetes.yaml")}


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_file_parses(path: Path) -> None:
    assert _docs(path.name)


def test_dockerfile_is_slim_non_root_with_a_healthcheck() -> None:
    steps = _dockerfile()
    instructions = [name for name, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [args for name, args in steps if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # The last USER comes before the command runs, after every install step.
    assert instructions.index("CMD") > max(i for i, n in enumerate(instructions) if n == "USER")
    assert ("EXPOSE", "3333") in steps
    assert any(name == "RUN" and "pip install ." in args for name, args in steps)
    healthcheck = next(args for name, args in steps if name == "HEALTHCHECK")
    assert "/health" in healthcheck and "urllib" in healthcheck and "curl" not in healthcheck
    command = next(args for name, args in steps if name == "CMD")
    assert yaml.safe_load(command) == ["mini-llm", "serve", "--host", "0.0.0.0"]
    copied = " ".join(args for name, args in steps if name == "COPY")
    for needed in ("pyproject.toml", "README.md", "mini-llm.yaml", "schemas/", "mini_llm/"):
        assert needed in shlex.split(copied)


def test_kubernetes_deployment_has_replicas_probes_configmap_folder_and_secret() -> None:
    kube = _kube()
    deployment = kube[("Deployment", "mini-llm")]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > 30  # server.shutdown_grace_s
    mount = next(m for m in container["volumeMounts"] if m["name"] == "table")
    assert mount["mountPath"] == "/etc/mini-llm" and "subPath" not in mount
    volume = next(v for v in pod["volumes"] if v["name"] == "table")
    assert volume["configMap"]["name"] == "mini-llm-table"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MINI_LLM_CONFIG"] == "/etc/mini-llm/mini-llm.yaml"
    assert env["MINI_LLM_REDIS_URL"].startswith("redis://mini-llm-redis:")
    assert container["envFrom"] == [{"secretRef": {"name": "mini-llm-keys"}}]
    assert "MINI_LLM_GATEWAY_KEY" in kube[("Secret", "mini-llm-keys")]["stringData"]
    assert kube[("Service", "mini-llm")]["spec"]["selector"] == {"app": "mini-llm"}
    assert ("Deployment", "mini-llm-redis") in kube
    assert kube[("Service", "mini-llm-redis")]["spec"]["ports"][0]["port"] == 6379


def test_configmap_holds_the_deploy_table() -> None:
    table = _kube()[("ConfigMap", "mini-llm-table")]["data"]["mini-llm.yaml"]
    assert table == (DEPLOY / "mini-llm.yaml").read_text(encoding="utf-8")


def test_compose_runs_two_replicas_and_redis() -> None:
    (compose,) = _docs("compose.yaml")
    services = compose["services"]
    replicas = [s for name, s in services.items() if name.startswith("mini-llm-")]
    assert len(replicas) == 2 and "redis" in services
    for service in replicas:
        assert service["environment"]["MINI_LLM_REDIS_URL"] == "redis://redis:6379/0"
        assert "MINI_LLM_GATEWAY_KEY" in service["environment"]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert any(v.split(":")[1] == "/etc/mini-llm" for v in service["volumes"])
    assert len({s["ports"][0] for s in replicas}) == 2


def test_the_table_loads_with_the_environment_the_manifests_give() -> None:
    deployment = _kube()[("Deployment", "mini-llm")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    env.update(_kube()[("Secret", "mini-llm-keys")]["stringData"])
    config = load_config(DEPLOY / "mini-llm.yaml", env)
    assert config.state.redis == "redis://mini-llm-redis:6379/0"
    assert [k.name for k in config.server.auth.keys] == ["default"]
    assert config.server.host == "0.0.0.0" and exposure_problem(config.server) is None
    assert "mini-llm" in config.server.allowed_hosts
    assert config.providers["openai"].limits.rpm == 500
    assert config.cache.enabled
    # Without a gateway key the table does not load: never an open gateway by mistake.
    with pytest.raises(ConfigError, match="MINI_LLM_GATEWAY_KEY"):
        load_config(DEPLOY / "mini-llm.yaml", {})
