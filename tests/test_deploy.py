"""Offline checks of deploy/: example config, Kubernetes manifests, compose file, systemd unit,
Dockerfile and its health check.

PyYAML is not a dependency: when it is importable it parses the YAML; otherwise `load_yaml`
below reads the subset these files are written in (block mappings and sequences, plain and
quoted scalars, `[a, b]` lists, `|` literals). `test_yaml_reader_matches_pyyaml` keeps the two
in agreement wherever PyYAML exists.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest

from connector.faces.config import SECTION_PREFIX, Settings, load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
UNIT = DEPLOY / "kantata-sync.service"

try:
    import yaml as pyyaml
except ImportError:  # the normal case: fall back to the subset reader
    pyyaml = None


# --------------------------------------------------------------------------- a YAML subset


ENTRY = re.compile(r"([^:]+?):(?: (.*)|$)")
"""`key: value` or `key:` (a colon followed by a space or the end of the line)."""


def _strip_comment(line: str) -> str:
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index].rstrip()
    return line.rstrip()


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_scalar(part) for part in inner.split(",")] if inner else []
    if text in ("", "~", "null"):
        return None
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        return int(text)
    if re.fullmatch(r"0[0-7]+", text):  # YAML 1.1 octal, as Kubernetes reads file modes
        return int(text, 8)
    if re.fullmatch(r"-?[0-9]+\.[0-9]*", text):
        return float(text)
    return text


class _Reader:
    def __init__(self, text: str) -> None:
        self.raw = text.splitlines()
        self.pos = 0

    def _next(self) -> tuple[int, str] | None:
        """Indent and content of the next meaningful line, without consuming it."""
        while self.pos < len(self.raw):
            content = _strip_comment(self.raw[self.pos])
            if content.strip():
                return len(content) - len(content.lstrip(" ")), content.strip()
            self.pos += 1
        return None

    def block(self, indent: int) -> Any:
        line = self._next()
        if line is None or line[0] < indent:
            return None
        if line[1] == "-" or line[1].startswith("- "):
            return self._sequence(line[0])
        return self._mapping(line[0])

    def _sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while (line := self._next()) is not None and line[0] == indent and line[1][:1] == "-":
            rest = line[1][1:].lstrip()
            if not rest:
                self.pos += 1
                items.append(self.block(indent + 1))
                continue
            # The item's content starts two columns right of the dash: re-read it there.
            column = indent + len(line[1]) - len(rest)
            self.raw[self.pos] = " " * column + rest
            if ENTRY.match(rest) and not rest.startswith(("'", '"', "[")):
                items.append(self._mapping(column))
            else:
                items.append(_scalar(rest))
                self.pos += 1
        return items

    def _literal(self, indent: int, chomp: str) -> str:
        lines: list[str] = []
        while self.pos < len(self.raw):
            text = self.raw[self.pos]
            if text.strip() and len(text) - len(text.lstrip(" ")) <= indent:
                break
            lines.append(text)
            self.pos += 1
        while lines and not lines[-1].strip():
            lines.pop()
        body = [line for line in lines if line.strip()]
        cut = min((len(line) - len(line.lstrip(" ")) for line in body), default=0)
        text = "\n".join(line[cut:] for line in lines)
        return text if chomp == "-" else text + "\n"

    def _mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (line := self._next()) is not None and line[0] == indent:
            entry = ENTRY.match(line[1])
            if entry is None or line[1][:1] == "-":
                raise ValueError(f"line {self.pos + 1}: not a mapping entry: {line[1]!r}")
            key, value = _scalar(entry.group(1)), (entry.group(2) or "").strip()
            self.pos += 1
            if value in ("|", "|-"):
                out[key] = self._literal(indent, value[1:])
            elif value:
                out[key] = _scalar(value)
            else:
                following = self._next()
                same_level_list = following is not None and following[0] == indent
                if same_level_list and following is not None and following[1][:1] == "-":
                    out[key] = self._sequence(indent)
                else:
                    out[key] = self.block(indent + 1)
        return out


def load_yaml(text: str) -> list[Any]:
    """Every document of a YAML stream, with PyYAML when available, else the subset reader."""
    if pyyaml is not None:
        return [doc for doc in pyyaml.safe_load_all(text) if doc is not None]
    return load_yaml_subset(text)


def load_yaml_subset(text: str) -> list[Any]:
    documents = re.split(r"(?m)^---[ \t]*$", text)
    parsed = [_Reader(document).block(0) for document in documents]
    return [doc for doc in parsed if doc is not None]


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in load_yaml(path.read_text("utf-8")):
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


def pod_spec(kind: str) -> dict[str, Any]:
    obj = manifests()[kind]
    if kind == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(obj["spec"]["template"]["spec"])


# --------------------------------------------------------------------------- example config


def example_keys() -> set[str]:
    """Setting names of every key in config.example.toml, commented-out ones included."""
    keys: set[str] = set()
    section = ""
    for line in (DEPLOY / "config.example.toml").read_text("utf-8").splitlines():
        if match := re.fullmatch(r"\[(\w+)\]", line.strip()):
            section = match.group(1)
        elif section and (match := re.fullmatch(r"#? ?([a-z_]+) = .+", line.strip())):
            keys.add(SECTION_PREFIX[section] + match.group(1))
    return keys


def test_example_config_loads() -> None:
    """deploy/config.example.toml loads through load_settings with an empty environment."""
    settings = load_settings(DEPLOY / "config.example.toml", environ={})
    assert settings.kantata_sync_database_url == "sqlite:////data/kantata-sync.db"
    assert settings.kantata_token_file == Path("/etc/kantata-sync/kantata-token")
    assert settings.noko_token_file == Path("/etc/kantata-sync/noko-token")
    assert settings.kantata_sync_metrics_port == 9108


def test_example_config_documents_every_setting() -> None:
    """Every key in the example is a real setting, and every setting appears in it."""
    keys = example_keys()
    assert keys - set(Settings.model_fields) == set()
    assert set(Settings.model_fields) - keys == set()


def test_example_config_defaults_match_the_code() -> None:
    """Values the example gives as defaults are the code's defaults."""
    data = tomllib.loads((DEPLOY / "config.example.toml").read_text("utf-8"))
    not_defaults = {"kantata_token_file", "noko_token_file", "kantata_sync_database_url"}
    not_defaults |= {"kantata_sync_metrics_port"}
    for section, values in data.items():
        for key, value in values.items():
            name = SECTION_PREFIX[section] + key
            if name not in not_defaults:
                assert Settings.model_fields[name].default == value, name


# --------------------------------------------------------------------------- kubernetes


def test_yaml_reader_reads_the_subset() -> None:
    """The fallback YAML reader handles the constructs the deploy files use."""
    text = (
        "# c\na: 1\nb:\n  - x\n  - name: y\n    port: 9108 # c\n"
        'c: "q # not a comment"\nd: [run, "--interval", 30]\n'
        "e:\n- 1\nf: |\n  one\n    two\n\ng: 0440\nh: true\n---\nkind: Two\n"
    )
    assert load_yaml_subset(text) == [
        {
            "a": 1,
            "b": ["x", {"name": "y", "port": 9108}],
            "c": "q # not a comment",
            "d": ["run", "--interval", 30],
            "e": [1],
            "f": "one\n  two\n",
            "g": 0o440,
            "h": True,
        },
        {"kind": "Two"},
    ]


@pytest.mark.skipif(pyyaml is None, reason="PyYAML not installed: nothing to compare with")
@pytest.mark.parametrize("path", [*MANIFESTS, DEPLOY / "compose.yaml"], ids=lambda p: p.name)
def test_yaml_reader_matches_pyyaml(path: Path) -> None:
    """The fallback reader and PyYAML read every deploy YAML file the same."""
    assert pyyaml is not None
    text = path.read_text("utf-8")
    assert load_yaml_subset(text) == [d for d in pyyaml.safe_load_all(text) if d is not None]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_have_the_required_fields(path: Path) -> None:
    """Each manifest parses and has apiVersion, kind and metadata.name, and no namespace."""
    documents = load_yaml(path.read_text("utf-8"))
    assert documents
    for doc in documents:
        assert isinstance(doc.get("apiVersion"), str)
        assert isinstance(doc.get("kind"), str)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        assert "namespace" not in doc["metadata"]


def test_expected_objects_exist() -> None:
    """The manifests hold a Deployment, a CronJob, the first backfill's Job, a PVC, a ConfigMap
    and a Secret."""
    assert set(manifests()) == {
        "Deployment",
        "CronJob",
        "Job",
        "PersistentVolumeClaim",
        "ConfigMap",
        "Secret",
    }


def test_deployment_is_a_single_writer() -> None:
    """The Deployment runs one replica and replaces it with Recreate, never side by side."""
    deployment = manifests()["Deployment"]
    assert deployment["apiVersion"] == "apps/v1"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = pod_spec("Deployment")["containers"][0]
    assert container["args"] == ["run"]


def test_deployment_probes_hit_healthz_and_readyz() -> None:
    """Liveness asks /healthz (progress), readiness /readyz (the last cycle), on port 9108,
    which the container exposes. Before, both asked /healthz, which failed a long first sync."""
    container = pod_spec("Deployment")["containers"][0]
    assert {"containerPort": 9108, "name": "metrics", "protocol": "TCP"} in container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9108}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9108}


def test_first_backfill_runs_as_a_job() -> None:
    """The first full sync has a Job of its own, run once before the daemon, so that no
    probe stands over it; it is not retried by Kubernetes (run again by hand)."""
    job = manifests()["Job"]
    assert job["spec"]["backoffLimit"] == 0
    spec = pod_spec("Job")
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    assert container["args"][0] == "backfill"
    assert "livenessProbe" not in container
    assert "backfill-job.yaml" in (DEPLOY / "README.md").read_text("utf-8")


def test_cronjob_never_overlaps() -> None:
    """The CronJob runs `sync` with concurrencyPolicy Forbid and no in-place Job retries."""
    cronjob = manifests()["CronJob"]
    assert cronjob["apiVersion"] == "batch/v1"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    spec = pod_spec("CronJob")
    assert spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["args"] == ["sync"]


@pytest.mark.parametrize("kind", ["Deployment", "CronJob", "Job"])
def test_pods_are_locked_down(kind: str) -> None:
    """Pods run as non-root with a read-only root filesystem; only /data and /tmp are writable."""
    spec = pod_spec(kind)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    container = spec["containers"][0]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/data", "/tmp"}


@pytest.mark.parametrize("kind", ["Deployment", "CronJob", "Job"])
def test_pods_wire_state_config_and_tokens(kind: str, tmp_path: Path) -> None:
    """The PVC is /data, the ConfigMap's config.toml is the config, the Secret gives the tokens."""
    objects = manifests()
    spec = pod_spec(kind)
    container = spec["containers"][0]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    pvc = objects["PersistentVolumeClaim"]
    assert mounts["/data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    config_map = objects["ConfigMap"]
    assert mounts["/etc/kantata-sync"]["configMap"]["name"] == config_map["metadata"]["name"]
    secret = objects["Secret"]
    token_dir = next(path for path, volume in mounts.items() if "secret" in volume)
    assert mounts[token_dir]["secret"]["secretName"] == secret["metadata"]["name"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KANTATA_SYNC_CONFIG"] == "/etc/kantata-sync/config.toml"

    config = tmp_path / "config.toml"
    config.write_text(config_map["data"]["config.toml"], encoding="utf-8")
    settings = load_settings(config, environ={})
    assert settings.kantata_sync_database_url == "sqlite:////data/kantata-sync.db"
    assert settings.kantata_sync_metrics_port == 9108
    assert settings.kantata_sync_metrics_host == "0.0.0.0"  # noqa: S104 - probes reach the pod IP
    tokens = {
        settings.kantata_token_file,
        settings.noko_token_file,
        settings.kantata_sync_status_token_file,
    }
    assert tokens == {Path(token_dir) / key for key in secret["stringData"]}


def test_secret_example_holds_placeholders_only() -> None:
    """The example Secret has both token keys with obvious placeholder values."""
    secret = manifests()["Secret"]
    assert set(secret["stringData"]) == {"kantata-token", "noko-token", "status-token"}
    for value in secret["stringData"].values():
        assert value.startswith("REPLACE-WITH-")


# --------------------------------------------------------------------------- compose


def test_compose_runs_the_connector_against_the_sandbox() -> None:
    """compose.yaml: a sandbox service and a connector syncing it every 30 s into a volume."""
    (compose,) = load_yaml((DEPLOY / "compose.yaml").read_text("utf-8"))
    sandbox = compose["services"]["sandbox"]
    connector = compose["services"]["connector"]
    assert sandbox["command"] == ["sandbox", "--host", "0.0.0.0"]  # noqa: S104 - in a container
    assert sandbox["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert connector["command"] == ["run", "--interval", "30"]
    assert connector["depends_on"]["sandbox"]["condition"] == "service_healthy"
    env = connector["environment"]
    assert env["KANTATA_SYNC_ALLOW_INSECURE_HTTP"] == "true"
    assert env["KANTATA_TOKEN"] == "sandbox-kantata-token"
    assert env["NOKO_TOKEN"] == "sandbox-noko-token"
    assert env["KANTATA_BASE_URL"].startswith("http://sandbox:8701/")
    assert env["NOKO_BASE_URL"].startswith("http://sandbox:8702/")
    assert connector["volumes"] == ["state:/data"]
    assert "state" in compose["volumes"]
    settings = load_settings(None, environ={k: str(v) for k, v in env.items()})
    assert settings.kantata_sync_interval > 0
    # Published beyond loopback, /status needs a bearer token: compose gives it one.
    assert settings.status_exposed()
    token_file = str(settings.kantata_sync_status_token_file)
    (mount,) = [c for c in connector["configs"] if c["target"] == token_file]
    assert compose["configs"][mount["source"]]["content"]


# --------------------------------------------------------------------------- systemd


def unit_directives() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in UNIT.read_text("utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def test_unit_is_hardened() -> None:
    """The systemd unit has the sandboxing, stop and restart settings the deployment relies on."""
    unit = unit_directives()
    expected = {
        "User": "kantata-sync",
        "Group": "kantata-sync",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "StateDirectory": "kantata-sync",
        "EnvironmentFile": "/etc/kantata-sync/env",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "30",
        "Restart": "on-failure",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["ExecStart"] == ["/opt/kantata-sync/bin/kantata-sync run"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # token files read again
    assert (
        "KANTATA_SYNC_DATABASE_URL=sqlite:////var/lib/kantata-sync/kantata-sync.db"
        in (unit["Environment"])
    )


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed: unit file not verified",
)
@pytest.mark.e2e
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit with no warnings (ExecStart pointed at this
    environment's kantata-sync, as it would be in /opt/kantata-sync)."""
    executable = Path(sys.executable).parent / "kantata-sync"
    if not executable.exists():
        pytest.skip("kantata-sync is not installed next to this Python")
    text = UNIT.read_text("utf-8").replace("/opt/kantata-sync/bin/kantata-sync", str(executable))
    unit = tmp_path / "kantata-sync.service"
    unit.write_text(text, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "kantata-sync.service" not in output, output  # warnings name the unit file


# --------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text("utf-8"))
    steps = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            steps.append((instruction.upper(), arguments.strip()))
    return steps


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM")
    return steps[last_from:]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    """The runtime image is python:3.11-slim and switches to a non-root USER."""
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    users = [arguments for instruction, arguments in stage if instruction == "USER"]
    assert users
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_declares_state_port_and_entrypoint() -> None:
    """/data is a volume holding the database, 9108 is exposed, and the entrypoint is the CLI."""
    stage = final_stage()
    arguments = dict(stage)
    assert arguments["EXPOSE"] == "9108"
    assert json.loads(arguments["VOLUME"]) == ["/data"]
    assert json.loads(arguments["ENTRYPOINT"]) == ["kantata-sync"]
    assert json.loads(arguments["CMD"]) == ["run"]
    env = " ".join(args for instruction, args in stage if instruction == "ENV")
    assert "KANTATA_SYNC_DATABASE_URL=sqlite:////data/kantata-sync.db" in env.split()
    assert "KANTATA_SYNC_METRICS_PORT=9108" in env.split()
    build = " ".join(args for instruction, args in dockerfile() if instruction == "RUN")
    assert "pip install ." in build


def healthcheck_code() -> str:
    (arguments,) = [args for instruction, args in dockerfile() if instruction == "HEALTHCHECK"]
    command = json.loads(arguments[arguments.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    code = command[2]
    assert isinstance(code, str)
    return code


def test_dockerfile_healthcheck_asks_the_daemon_on_loopback() -> None:
    """The HEALTHCHECK asks /healthz on 127.0.0.1 at KANTATA_SYNC_METRICS_PORT (default 9108)."""
    code = healthcheck_code()
    assert "http://127.0.0.1:" in code
    assert "/healthz" in code
    assert "KANTATA_SYNC_METRICS_PORT" in code
    assert "'9108'" in code


@pytest.fixture
def healthz() -> Iterator[tuple[int, list[int]]]:
    """A loopback server answering /healthz with the status at the head of the list."""
    statuses = [200]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            status = statuses[0] if self.path == "/healthz" else 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], statuses
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.e2e
def test_dockerfile_healthcheck_passes_and_fails(healthz: tuple[int, list[int]]) -> None:
    """The HEALTHCHECK command exits 0 on a 200 from /healthz and non-zero on 503."""
    port, statuses = healthz
    env = {"KANTATA_SYNC_METRICS_PORT": str(port), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-c", healthcheck_code()]
    ok = subprocess.run(command, env=env, capture_output=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    statuses[0] = 503
    bad = subprocess.run(command, env=env, capture_output=True, timeout=30, check=False)
    assert bad.returncode != 0
