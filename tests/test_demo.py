"""``make demo`` / ``--demo``: runtime-only install, options, data that moves without scrapes,
and the printed commands, which must work as printed, also with TLS and basic auth."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from demo.configs import duration_seconds, grafana_provisioning, rule_files, shortest_for
from exporter.demo import https_options
from tests.conftest import StartExporter
from tests.exporter_process import ExporterProcess, run_cli

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "demo-scrape-password"


# -- make demo ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_only_the_runtime_dependencies_and_passes_the_options(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    result = subprocess.run(
        [
            "make",
            "-n",
            "demo",
            f"VENV={venv}",
            "DEMO_PORT=9999",
            "DEMO_PROFILE=quiet",
            "ARGS=--log.level=debug",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    plan = result.stdout
    assert "pip install --quiet -e ." in plan
    assert "[test]" not in plan, "make demo must not install the test toolchain"
    assert re.search(
        r"-m exporter --demo --web\.listen-address=127\.0\.0\.1:9999\s+--demo\.profile=quiet "
        r"--log\.level=debug",
        plan.replace("\\\n", " "),
    ), plan


def test_an_unknown_demo_profile_is_one_line_naming_the_choices() -> None:
    result = run_cli(["--demo", "--demo.profile", "lively"])
    assert result.code == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "--demo.profile: unknown profile 'lively'" in last
    assert "choose one of bench, demo, quiet, steady" in last
    assert "Traceback" not in result.stderr


def test_a_demo_profile_without_demo_is_refused() -> None:
    result = run_cli(["--demo.profile", "quiet"])
    assert result.code == 2
    assert "--demo.profile needs --demo" in result.stderr


def _wait_for_banner(exporter: ExporterProcess) -> str:
    deadline = time.monotonic() + 30
    while "Press Ctrl-C" not in "\n".join(exporter.stdout):
        assert time.monotonic() < deadline, exporter.output()
        time.sleep(0.05)
    return "\n".join(exporter.stdout)


def test_the_demo_refreshes_by_itself_without_scrapes(start_exporter: StartExporter) -> None:
    exporter = start_exporter(["--demo", "--demo.profile", "quiet"])
    banner = _wait_for_banner(exporter)
    assert "refreshes every 5 s by itself" in banner

    def refresh_times() -> list[str]:
        page = httpx.get(exporter.url + "/", timeout=10).text
        return re.findall(r"<td>(\d{4}-\d\d-\d\dT[\d:]+\+00:00)</td>", page)

    deadline = time.monotonic() + 30
    first = refresh_times()
    while len(first) < 2:  # both regions refreshed once
        assert time.monotonic() < deadline, exporter.output()
        time.sleep(0.2)
        first = refresh_times()
    # Nobody scrapes /metrics: the landing page still shows newer refreshes.
    while not all(later > earlier for later, earlier in zip(refresh_times(), first, strict=True)):
        assert time.monotonic() < deadline, f"no refresh since {first}:\n{exporter.output()}"
        time.sleep(0.5)
    assert exporter.stop() == 0


# -- commands that work with TLS and basic auth ------------------------------------------------


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: str,
    names: list[x509.GeneralName],
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _tls_files(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A certificate and key: self-signed for localhost or 127.0.0.1, or issued by a CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    if kind == "self-signed, DNS:localhost only":
        # Like docs/deployment.md's openssl example without the IP: https://127.0.0.1 would fail.
        cert = _certificate("exporter", [x509.DNSName("localhost")], key, ca=True)
    elif kind == "self-signed, IP:127.0.0.1":
        ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        cert = _certificate("exporter", [ip], key, ca=True)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("demo CA", [], ca_key, ca=True)
        ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        cert = _certificate("exporter", [ip], key, (ca.subject, ca_key), ca=False)
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(_key_pem(key))
    return cert_file, key_file


def _suggested_commands(banner: str) -> list[str]:
    return [line.strip() for line in banner.splitlines() if line.strip().startswith("curl ")]


def _with_password(command: str) -> str:
    """The command with the password curl would ask for given on the command line."""
    return command.replace(" -u prometheus ", f" -u prometheus:{PASSWORD} ")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize(
    "kind",
    ["self-signed, DNS:localhost only", "self-signed, IP:127.0.0.1", "issued by a CA"],
)
@pytest.mark.parametrize("basic_auth", [True, False], ids=["basic-auth", "tls-only"])
def test_the_tls_demo_prints_curl_commands_that_work(
    start_exporter: StartExporter, tmp_path: Path, kind: str, basic_auth: bool
) -> None:
    cert_file, key_file = _tls_files(tmp_path, kind)
    web_config: dict[str, object] = {
        "tls_server_config": {"cert_file": cert_file.name, "key_file": key_file.name}
    }
    if basic_auth:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        web_config["basic_auth_users"] = {"prometheus": hashed}
    web_config_file = tmp_path / "web-config.yml"
    web_config_file.write_text(json.dumps(web_config))

    exporter = start_exporter(["--demo", f"--web.config.file={web_config_file}"])
    commands = _suggested_commands(_wait_for_banner(exporter))
    assert len(commands) == 2, exporter.output()
    for command in commands:
        assert "--cacert" in command
        assert ("-u prometheus " in command) is basic_auth
        assert PASSWORD not in command
        assert "-k" not in shlex.split(command)
        assert "--insecure" not in command

    # The first command greps for results in view: wait for the first refresh.
    deadline = time.monotonic() + 30
    while True:
        run = subprocess.run(
            ["bash", "-o", "pipefail", "-c", _with_password(commands[0])],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if run.returncode == 0 and "aliyun_cloudassistant_invocation_results{" in run.stdout:
            break
        assert time.monotonic() < deadline, f"{commands[0]}: {run.returncode} {run.stderr}"
        time.sleep(0.5)
    curl_alone = _with_password(commands[1].split(" | ")[0]) + " --fail --show-error"
    run = subprocess.run(
        ["bash", "-c", curl_alone], capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == 0, f"{curl_alone}: {run.stderr}"
    assert "aliyun_cloudassistant_up{" in run.stdout
    assert exporter.stop() == 0


# -- the demo stack's files (the stack itself: tests/test_demo_stack.py) -----------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300.0), ("1h30m", 5400.0), ("0s", 0.0), ("0", 0.0), ("90s", 90.0), ("250ms", 0.25)],
)
def test_prometheus_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "-5m", "5x", "1.5m"])
def test_bad_prometheus_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        duration_seconds(text)


def test_the_stack_waits_for_the_shipped_rules_shortest_for() -> None:
    rules = rule_files(ROOT)
    assert rules, "no alerts/*.rules.yml"
    assert 0 < shortest_for(rules) <= 15 * 60


def test_grafana_provisioning_points_at_the_demo_prometheus(tmp_path: Path) -> None:
    assert grafana_provisioning(tmp_path, "http://127.0.0.1:19090")
    sources = [
        source
        for path in (tmp_path / "provisioning" / "datasources").iterdir()
        for source in yaml.safe_load(path.read_text())["datasources"]
        if source["type"] == "prometheus"
    ]
    assert sources
    assert all(source["url"] == "http://127.0.0.1:19090" for source in sources)
    assert any((tmp_path / "provisioning" / "dashboards").iterdir())
    copied = sorted(path.name for path in (tmp_path / "dashboards").iterdir())
    assert copied == sorted(path.name for path in (ROOT / "dashboards").glob("*.json"))


def test_a_wildcard_certificate_gets_a_name_it_covers_resolved_to_the_listener(
    tmp_path: Path,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("exporter", [x509.DNSName("*.monitoring.internal")], key, ca=True)
    cert_file = tmp_path / "tls.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    url, options, note = https_options("https://127.0.0.1:9907", cert_file)
    assert url == "https://demo.monitoring.internal:9907"
    assert options == [
        "--cacert",
        str(cert_file.absolute()),
        "--resolve",
        "demo.monitoring.internal:9907:127.0.0.1",
    ]
    assert note == ""
