"""deploy/ cannot be run here (no Docker engine, no cluster), so its files are checked instead:
they parse, and every command line, port, env var and reference they use exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.cli.env import env_names
from controlplane.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SOURCES = [*ROOT.joinpath("controlplane").rglob("*.py"), *ROOT.joinpath("dataplane").rglob("*.py")]


def known_env_vars() -> set[str]:
    """Every environment variable the code reads."""
    pattern = re.compile(r"os\.environ(?:\.get\(|\[)\s*[\"']([A-Z0-9_]+)[\"']")
    read = {m for path in SOURCES for m in pattern.findall(path.read_text())}
    return read | env_names(build_parser())


def parse_meterline(args: list[str]) -> Any:
    """The args as `meterline` parses them; argparse errors become test failures."""
    try:
        return build_parser().parse_args(args)
    except SystemExit as exc:  # argparse reports unknown flags by exiting
        pytest.fail(f"meterline rejects {args}: exit {exc.code}")


def listen_port(args: list[str]) -> int:
    namespace = parse_meterline(args)
    return int(namespace.listen.rsplit(":", 1)[1])


def served_ports(args: list[str]) -> set[int]:
    """The ports a command line listens on: --listen, the cluster listener (unless
    --insecure-dev) and, if set, --metrics-listen."""
    namespace = parse_meterline(args)
    ports = {int(namespace.listen.rsplit(":", 1)[1])}
    if namespace.command == "controlplane":
        ports.add(cluster_port(args))
    if getattr(namespace, "metrics_listen", None):
        ports.add(int(namespace.metrics_listen.rsplit(":", 1)[1]))
    return ports


def cluster_port(args: list[str]) -> int:
    """Where a control plane serves data planes: --cluster-listen, or --listen in dev mode."""
    namespace = parse_meterline(args)
    if namespace.insecure_dev:
        return listen_port(args)
    return int(namespace.cluster_listen.rsplit(":", 1)[1])


def assert_trust_flags(name: str, namespace: Any) -> None:
    """Outside --insecure-dev every certificate flag is set (the process would refuse to start)."""
    if namespace.insecure_dev:
        return
    flags = ["cluster_cert", "cluster_key", "cluster_ca"]
    if namespace.command == "controlplane":
        flags.append("tokens_file")
    missing = [flag for flag in flags if not getattr(namespace, flag)]
    assert not missing, f"{name}: missing {missing}"


def fake_provider_flags() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "dataplane.testing.fake_openai", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(re.findall(r"--[a-z-]+", out))


def test_the_code_reads_the_env_vars_the_docs_name() -> None:
    assert {"DATABASE_URL", "METERLINE_CP"} <= known_env_vars()


# Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_entrypoint_and_default_command_exist() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["meterline"\]$', text, re.M)
    assert 'meterline = "controlplane.cli:main"' in (ROOT / "pyproject.toml").read_text()
    cmd = yaml.safe_load(re.search(r"^CMD (.+)$", text, re.M).group(1))
    assert listen_port(cmd) == 50051
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()}
    # 9090: the control plane's --metrics-listen in the manifests.
    assert exposed == {50051, 50052, 8000, 9090}
    for source in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / source).exists(), source
    assert re.search(r"^USER 10001", text, re.M), "the image must not run as root"


# Compose ------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())


def test_compose_commands_flags_ports_and_env_exist() -> None:
    services = compose()["services"]
    assert {"postgres", "controlplane", "fake-provider"} <= set(services)
    dataplanes = [name for name in services if name.startswith("dataplane-")]
    assert len(dataplanes) == 3
    env_vars = known_env_vars()
    for name, service in services.items():
        if service.get("image") != "meterline:0.1.0":
            continue
        command = service["command"]
        if service.get("entrypoint") == ["python", "-m", "dataplane.testing.fake_openai"]:
            assert {a for a in command if a.startswith("--")} <= fake_provider_flags()
            continue
        assert "entrypoint" not in service, name
        namespace = parse_meterline(command)
        for variable in service.get("environment", {}):
            assert variable in env_vars, f"{name}: {variable} is read by nothing"
        for mapping in service.get("ports", []):
            container_port = int(mapping.rsplit(":", 1)[1])
            assert container_port in served_ports(command), name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        if namespace.command in ("controlplane", "dataplane"):
            assert_trust_flags(name, namespace)
        if namespace.command == "dataplane":
            host, port = namespace.cp.split(":")
            assert host in services and int(port) == cluster_port(services[host]["command"])


# Kubernetes ---------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d["kind"] == kind]


def pod_specs() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    specs = []
    for d in by_kind("Deployment") + by_kind("Job"):
        template = d["spec"]["template"]
        specs.append((d["metadata"]["name"], template["spec"], template["metadata"]["labels"]))
    return specs


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_kubernetes_has_the_promised_objects() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in k8s_documents()}
    assert {
        ("Deployment", "meterline-controlplane"),
        ("Service", "meterline-controlplane"),
        ("Deployment", "meterline-dataplane"),
        ("Service", "meterline-dataplane"),
        ("HorizontalPodAutoscaler", "meterline-dataplane"),
        ("PodDisruptionBudget", "meterline-dataplane"),
        ("Secret", "meterline"),
        ("Job", "meterline-migrate"),
    } <= kinds
    (cp,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "meterline-controlplane"]
    assert cp["spec"]["replicas"] == 2


def test_kubernetes_containers_use_real_flags_ports_env_and_secrets() -> None:
    secrets = {d["metadata"]["name"]: set(d.get("stringData", {})) for d in by_kind("Secret")}
    env_vars = known_env_vars()
    services = {d["metadata"]["name"]: d for d in by_kind("Service")}
    for name, spec, _ in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            args = container["args"]
            namespace = parse_meterline(args)
            for port in container.get("ports", []):
                assert port["containerPort"] in served_ports(args), name
            for env in container.get("env", []):
                assert env["name"] in env_vars, f"{name}: {env['name']} is read by nothing"
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], f"{name}: {ref}"
            if namespace.command in ("controlplane", "dataplane"):
                assert_trust_flags(name, namespace)
            if namespace.command == "dataplane":
                host, port = namespace.cp.split(":")
                assert host in services
                assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}


def test_kubernetes_selectors_and_targets_resolve() -> None:
    pods = pod_specs()
    for service in by_kind("Service") + by_kind("PodDisruptionBudget"):
        selector = service["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        matches = [spec for _, spec, labels in pods if selector.items() <= labels.items()]
        assert matches, f"{service['metadata']['name']} selects no pod"
        for port in service["spec"].get("ports", []):
            names = {p["name"] for spec in matches for c in spec["containers"] for p in c["ports"]}
            assert port["targetPort"] in names
    deployments = {d["metadata"]["name"] for d in by_kind("Deployment")}
    for hpa in by_kind("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments


# Local topology scripts ---------------------------------------------------------------------


@pytest.mark.parametrize("script", ["up.sh", "down.sh"])
def test_local_scripts_are_valid_bash(script: str) -> None:
    subprocess.run(["bash", "-n", str(DEPLOY / "local" / script)], check=True)


# Observability: probes, metrics ports, log format -----------------------------------------


def test_compose_dataplane_healthcheck_asks_readyz_on_its_port() -> None:
    services = compose()["services"]
    for name in (n for n in services if n.startswith("dataplane-")):
        service = services[name]
        probe = " ".join(service["healthcheck"]["test"])
        port = listen_port(service["command"])
        assert f"http://127.0.0.1:{port}/readyz" in probe, name


def test_every_meterline_process_logs_json() -> None:
    commands = [
        s["command"]
        for s in compose()["services"].values()
        if s.get("image") == "meterline:0.1.0" and "entrypoint" not in s
    ]
    commands += [c["args"] for _, spec, _ in pod_specs() for c in spec["containers"]]
    for command in commands:
        namespace = parse_meterline(command)
        if namespace.command in ("controlplane", "dataplane"):
            assert namespace.log_format == "json", command


def test_kubernetes_probes_and_scrape_annotations_point_at_real_endpoints() -> None:
    from dataplane.observability.metrics import RESERVED_PATHS

    for d in by_kind("Deployment"):
        template = d["spec"]["template"]
        (container,) = template["spec"]["containers"]
        namespace = parse_meterline(container["args"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if namespace.command == "dataplane":
            # The data plane's HTTP probes: liveness /healthz, readiness /readyz.
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            for probe in ("livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                assert get["path"] in RESERVED_PATHS
                assert ports[get["port"]] == listen_port(container["args"])
            metrics_port = listen_port(container["args"])
        else:
            metrics_port = int(namespace.metrics_listen.rsplit(":", 1)[1])
            assert metrics_port in ports.values()
            # Kubernetes' gRPC probe asks the health service on the operator listener.
            assert container["readinessProbe"]["grpc"]["port"] == listen_port(container["args"])
            assert not namespace.operator_tls  # the probe speaks plaintext
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == metrics_port
        assert annotations["prometheus.io/path"] == "/metrics"
