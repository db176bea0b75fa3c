"""deploy/: every kustomize overlay renders, validates offline, and its containers really run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.allocator import JEMALLOC_CONF
from cli.auth import generate
from shared import subjects
from shared.client import ShoalClient
from shared.errors import ShoalError, Unavailable
from shared.natsserver import EmbeddedNats, nats_server_binary
from tests.conftest import eventually, require, terminate
from tests.integration.helpers_jobs import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ["base", "overlays/dind"]
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to run on
IN_CLUSTER_URL = "nats://nats:4222"
NODE = "kind-worker"  # what spec.nodeName says in the drift test
CLOUD_NODE = "ip-10-0-0-1.ec2.internal"  # a cloud provider's node name: not a NATS token
SHOAL = Path(sys.executable).parent / "shoal"

Doc = dict[str, Any]


@cache
def _render(overlay: str) -> tuple[Doc, ...]:
    kubectl = shutil.which("kubectl")
    require(kubectl is not None, "kubectl (for `kubectl kustomize`) is not installed")
    assert kubectl is not None
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def render(overlay: str) -> list[Doc]:
    return list(_render(overlay))


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"{kind}/{name} is not in the rendered manifests")


def workloads(docs: list[Doc]) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"))


def container(doc: Doc, name: str) -> Doc:
    spec = doc["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


# ---- render and validate -----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_kubernetes_schema(overlay: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        require(False, "kubernetes-validate is not installed (pip install -e '.[test]')")
        raise
    docs = render(overlay)
    assert {d["kind"] for d in docs} >= {
        "Namespace",
        "Secret",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "DaemonSet",
        "PodDisruptionBudget",
    }
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            raise AssertionError(f"{overlay}: {where}: {exc.message} at {exc.path}") from None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_follows_the_conventions(overlay: str) -> None:
    docs = render(overlay)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for doc in docs:
        meta = doc["metadata"]
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "shoal", meta["name"]
        if doc["kind"] != "Namespace":
            assert meta.get("namespace") == "shoal", meta["name"]
    for doc in workloads(docs):
        pod = doc["spec"]["template"]
        selector = doc["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items(), doc["metadata"]["name"]
        assert "app.kubernetes.io/component" in pod["metadata"]["labels"]
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            res = c.get("resources", {})
            assert res.get("requests") and res.get("limits"), (doc["metadata"]["name"], c["name"])
            assert not c["image"].endswith(":latest") and ":" in c["image"], c["image"]
        for volume in spec.get("volumes", []):
            sources = volume.get("projected", {}).get("sources", [volume])
            for source in sources:
                if "secret" in source:
                    ref = source["secret"].get("secretName") or source["secret"]["name"]
                    assert ("Secret", ref) in names, ref
                if "configMap" in source:
                    assert ("ConfigMap", source["configMap"]["name"]) in names
    for svc in (d for d in docs if d["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        assert any(
            selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
            for w in workloads(docs)
        ), svc["metadata"]["name"]

    nats = find(docs, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    server = container(nats, "nats")
    assert {"readinessProbe", "livenessProbe", "startupProbe"} <= server.keys()
    orch = find(docs, "StatefulSet", "orchestrator")
    assert orch["spec"]["replicas"] == 2
    orch_c = container(orch, "orchestrator")
    _check_health_probes(orch_c)
    # Production state has a replica on every NATS member.
    assert _env(orch_c, pod_name="x")["SHOAL_REPLICAS"] == str(nats["spec"]["replicas"])
    _check_orchestrator_identities(docs, orch)
    compute = container(find(docs, "DaemonSet", "shoal-compute"), "compute")
    _check_health_probes(compute)
    node_name = next(e for e in compute["env"] if e["name"] == "NODE_NAME")
    assert node_name["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    engines = compute["args"][compute["args"].index("--engines") + 1]
    assert engines == ("wasm,noop,docker" if overlay == "overlays/dind" else "wasm,noop")
    if overlay == "overlays/dind":
        env = {e["name"]: e.get("value") for e in compute["env"]}
        assert env["DOCKER_HOST"] == "unix:///run/dind/docker.sock"
        dind = container(find(docs, "DaemonSet", "shoal-compute"), "dind")
        assert dind["securityContext"]["privileged"] is True
        work = {m["name"]: m["mountPath"] for m in compute["volumeMounts"]}["work"]
        assert {m["name"]: m["mountPath"] for m in dind["volumeMounts"]}["work"] == work


def _pod_names(statefulset: Doc) -> list[str]:
    start = statefulset["spec"].get("ordinals", {}).get("start", 0)
    name = statefulset["metadata"]["name"]
    return [f"{name}-{start + i}" for i in range(statefulset["spec"]["replicas"])]


def _secret_volume(doc: Doc, mount: str) -> str:
    """The Secret a workload's container mounts at `mount`."""
    spec = doc["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for c in spec["containers"] for m in c["volumeMounts"]}
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[mount])
    return str(volume["secret"]["secretName"])


def _check_orchestrator_identities(docs: list[Doc], orch: Doc) -> None:
    """Each replica reads its own creds, one `shoal auth init --orchestrators N` makes
    (orchestrator-1..N), from a Secret the compute pods do not mount."""
    c = container(orch, "orchestrator")
    pods = _pod_names(orch)
    creds = [_env(c, pod_name=p)["SHOAL_CREDS"] for p in pods]
    assert creds == [f"/etc/shoal/creds/orchestrator-{i}.creds" for i in range(1, len(pods) + 1)]
    assert len(set(creds)) == len(pods)
    assert {_env(c, pod_name=p)["SHOAL_ORCHESTRATOR_NAME"] for p in pods} == set(pods)
    assert _secret_volume(orch, "/etc/shoal/creds") == "shoal-orchestrator-creds"
    # Every replica reads the same master key of the stored secrets, from that Secret.
    assert {_env(c, pod_name=p)["SHOAL_SECRETS_KEY"] for p in pods} == {
        "/etc/shoal/creds/secrets.key"
    }
    placeholder = find(docs, "Secret", "shoal-orchestrator-creds")["stringData"]
    assert {f"{p}.creds" for p in pods} <= placeholder.keys()
    compute = find(docs, "DaemonSet", "shoal-compute")
    assert _secret_volume(compute, "/etc/shoal/creds") == "shoal-creds"


def test_generated_secrets_split_orchestrators_from_nodes(tmp_path: Path) -> None:
    generate(tmp_path, nodes=[NODE], orchestrators=2, users=["alice:team-a"], admins=["root"])
    docs = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((tmp_path / "k8s-secrets.yaml").read_text())
    }
    assert set(docs["shoal-orchestrator-creds"]["stringData"]) == {
        "orchestrator-1.creds",
        "orchestrator-2.creds",
        "secrets.key",  # the stored secrets' master key, the same for every replica
    }
    assert set(docs["shoal-creds"]["stringData"]) == {f"{NODE}.creds"}  # no users' or admins'
    nats_data = docs["shoal-nats-auth"]["stringData"]
    assert {"users.conf", "routes-tls.conf", "route.pem", "route-key.pem", "route-ca.pem"} <= set(
        nats_data
    )
    assert "verify: true" in nats_data["routes-tls.conf"]


def _check_health_probes(c: Doc) -> None:
    """The container serves its probes over HTTP on SHOAL_METRICS_PORT, the port named
    `metrics`: startup and liveness /healthz, readiness /readyz; liveness is the more patient
    one (five minutes, as `shoal health --max-disconnected 300` was). --health-file stays, for
    `shoal health` by hand."""
    assert "--health-file" in c["args"], (c["name"], c["args"])
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    port = int(env["SHOAL_METRICS_PORT"])
    assert {"name": "metrics", "containerPort": port} in c["ports"], c["ports"]
    paths = {}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert kind in c, (c["name"], kind)
        get = c[kind]["httpGet"]
        assert get["port"] == "metrics", (kind, get)
        paths[kind] = get["path"]
    assert paths == {
        "startupProbe": "/healthz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }

    def patience(probe: Doc) -> int:
        return int(probe["periodSeconds"]) * int(probe["failureThreshold"])

    assert patience(c["livenessProbe"]) >= 300 > patience(c["readinessProbe"])


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_nats_config_is_the_deploy_one_and_nats_server_accepts_it(tmp_path: Path) -> None:
    docs = render("base")
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    conf = config_map["data"]["nats.conf"]
    assert conf == (DEPLOY / "nats" / "nats-cluster.conf").read_text()
    assert "sync_interval: always" in conf
    statefulset = find(docs, "StatefulSet", "nats")
    server = container(statefulset, "nats")
    assert "include ./routes-tls.conf" in conf
    # The pod's /etc/nats: the ConfigMap and the placeholder Secret, then the generated one
    # (users.conf, routes-tls.conf and the route certificates it names under /etc/nats).
    placeholder = find(docs, "Secret", "shoal-nats-auth")["stringData"]
    generate(tmp_path / "auth", nodes=[NODE], users=["alice"])
    secrets = yaml.safe_load_all((tmp_path / "auth" / "k8s-secrets.yaml").read_text())
    generated = next(d for d in secrets if d["metadata"]["name"] == "shoal-nats-auth")
    for i, files in enumerate((placeholder, generated["stringData"])):
        etc = tmp_path / f"etc-nats-{i}"
        etc.mkdir()
        (etc / "nats.conf").write_text(conf)
        for name, text in files.items():
            (etc / name).write_text(text.replace("/etc/nats/", f"{etc}/"))
        args = [
            _local(a, {"/etc/nats": str(etc), "/data": str(tmp_path / "data")})
            for a in server["args"]
        ]
        env = _env(server, pod_name="nats-0")
        result = subprocess.run(
            [nats_server_binary(), "-t", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert "is valid" in result.stderr + result.stdout


def test_helm_values_keep_the_production_settings() -> None:
    values = yaml.safe_load((K8S / "nats-helm-values.yaml").read_text())
    assert values["config"]["cluster"]["replicas"] == 3
    assert values["config"]["jetstream"]["merge"]["sync_interval"] == "always"
    assert values["config"]["merge"]["00$include"] == "shoal-auth/users.conf"
    mounts = [p["value"] for p in values["container"]["patch"]]
    volumes = [p["value"] for p in values["podTemplate"]["patch"]]
    assert mounts[0]["name"] == volumes[0]["name"]
    assert volumes[0]["secret"]["secretName"] == "shoal-nats-auth"
    # Mutual TLS on the routes, with the files `shoal auth init` puts in that Secret.
    tls = values["config"]["cluster"]["merge"]["tls"]
    assert tls["verify"] is True
    for key, name in (("cert_file", "route.pem"), ("key_file", "route-key.pem")):
        assert tls[key] == f"{mounts[0]['mountPath']}/{name}"
    assert tls["ca_file"] == f"{mounts[0]['mountPath']}/route-ca.pem"


def test_dockerfile_builds_the_shoal_entrypoint() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.count("FROM python:3.11-slim") == 1
    assert 'ENTRYPOINT ["shoal"]' in text
    assert "pip install ." in text
    for package in ("shared", "orchestrator", "compute", "cli"):
        assert f"COPY {package} ./{package}" in text


def test_dockerfile_runs_shoal_on_the_allocator_the_soak_measures() -> None:
    """The image preloads jemalloc with the configuration `bench soak --allocator jemalloc`
    measures (docs/benchmarks.md), so the figures are the deployed orchestrator's."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert "apt-get install -y --no-install-recommends libjemalloc2" in text
    assert "LD_PRELOAD=libjemalloc.so.2" in text
    assert "PYTHONMALLOC=malloc" in text
    assert f"MALLOC_CONF={JEMALLOC_CONF}" in text


# ---- the containers, as rendered, against a real nats-server ----------------------------------


_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion (unknown references stay as they are)."""
    return _REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def _env(c: Doc, *, pod_name: str, node_name: str = NODE) -> dict[str, str]:
    fields = {"metadata.name": pod_name, "spec.nodeName": node_name}
    env: dict[str, str] = {}
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _local(value: str, paths: dict[str, str]) -> str:
    """A path or URL inside the pod, as seen from this machine."""
    value = value.replace(IN_CLUSTER_URL, paths.get(IN_CLUSTER_URL, IN_CLUSTER_URL))
    for inside, outside in paths.items():
        if value == inside or value.startswith(inside + "/"):
            return outside + value[len(inside) :]
    return value


class Pod:
    """One rendered container run here: ENTRYPOINT `shoal`, its args, its env."""

    def __init__(
        self, c: Doc, pod_name: str, paths: dict[str, str], log: Path, node_name: str = NODE
    ) -> None:
        assert "command" not in c, "Shoal containers rely on the image's ENTRYPOINT"
        env = _env(c, pod_name=pod_name, node_name=node_name)
        self.env = {k: _local(v, paths) for k, v in env.items()}
        if "SHOAL_REPLICAS" in self.env:  # the cluster's size; this server is a single one
            self.env["SHOAL_REPLICAS"] = "1"
        self.argv = [str(SHOAL), *(_local(_expand(a, env), paths) for a in c["args"])]
        self.probes = [
            c[p]["httpGet"]["path"]
            for p in ("startupProbe", "readinessProbe", "livenessProbe")
            if "httpGet" in c.get(p, {})
        ]
        self.env["SHOAL_METRICS_PORT"] = str(free_port())  # the pods share this host
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env={**os.environ, **self.env}, stdout=out, stderr=out
            )

    async def probe(self) -> bool:
        """Every HTTP probe answers 200 (an AssertionError says which did not)."""
        port = self.env["SHOAL_METRICS_PORT"]
        for path in self.probes:
            status = await asyncio.to_thread(_http_status, f"http://127.0.0.1:{port}{path}")
            assert status == 200, (path, status)
        return True

    async def stop(self) -> int:
        proc = self.proc
        assert proc is not None
        if not await terminate(proc):  # SIGTERM: what the kubelet sends
            raise AssertionError(f"{self.argv} ignored SIGTERM for 20s")
        assert proc.returncode is not None
        return proc.returncode


@contextlib.asynccontextmanager
async def running(*pods: Pod) -> AsyncIterator[None]:
    try:
        for pod in pods:
            await pod.start()
        yield
    finally:
        for pod in pods:
            if pod.proc is not None:
                await pod.stop()


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_rendered_containers_run_and_register(overlay: str, tmp_path: Path) -> None:
    """On a cloud node name with dots, with the creds `shoal auth init` made for it, and
    their own probes passing against them."""
    docs = render(overlay)
    auth = tmp_path / "auth"
    generate(auth, nodes=[CLOUD_NODE], orchestrators=1, users=["tester"])
    node_id = subjects.node_id_from(CLOUD_NODE)
    async with EmbeddedNats(tmp_path / "nats", config=auth / "nats-server.conf") as server:
        paths = {
            IN_CLUSTER_URL: server.url,
            "/etc/shoal/creds": str(auth / "creds"),
            "/var/lib/shoal/compute": str(tmp_path / "work"),
            "/run/dind": str(tmp_path / "dind"),
        }
        orch_c = container(find(docs, "StatefulSet", "orchestrator"), "orchestrator")
        compute_c = container(find(docs, "DaemonSet", "shoal-compute"), "compute")
        orch = Pod(
            orch_c,
            "orchestrator-1",
            {**paths, "/tmp": str(tmp_path / "orchestrator-tmp")},  # each pod has its own /tmp
            tmp_path / "orchestrator.log",
        )
        compute = Pod(
            compute_c,
            "shoal-compute-xyz",
            {**paths, "/tmp": str(tmp_path / "compute-tmp")},
            tmp_path / "compute.log",
            node_name=CLOUD_NODE,
        )
        assert orch.env["SHOAL_CREDS"] == str(auth / "creds" / "orchestrator-1.creds")
        assert compute.env["SHOAL_CREDS"] == str(auth / "creds" / f"{CLOUD_NODE}.creds")
        assert len(orch.probes) == len(compute.probes) == 3

        async def registered() -> bool:
            try:
                async with await ShoalClient.connect(
                    server.url, str(auth / "creds/tester.creds")
                ) as c:
                    return any(
                        n.id == node_id and n.labels.get("hostname") == CLOUD_NODE
                        for n in await c.nodes()
                    )
            except (Unavailable, ShoalError):
                return False

        async with running(orch, compute):
            try:
                await eventually(registered, timeout=45, interval=0.5, what=f"{node_id} registered")
                for pod in (orch, compute):
                    await eventually(pod.probe, timeout=15, interval=0.5, what=f"{pod.argv} probes")
            except AssertionError as exc:
                logs = "\n".join(p.log.read_text(errors="replace")[-3000:] for p in (orch, compute))
                raise AssertionError(
                    f"the rendered containers did not come up ({exc}):\n{logs}"
                ) from None
        assert await orch.stop() == 0
        assert await compute.stop() == 0
