"""The command line: flags, --config.check, exit codes, and never a traceback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter import __version__
from exporter.cli import main, parse_listen_address
from exporter.settings import known_variables
from tests.conftest import StartExporter
from tests.exporter_process import run_cli, taken_loopback_port

BAD_CONFIGS = Path(__file__).parent / "bad_configs"
SECRET = "Sup3rS3cretValue-DoNotLeak"
GOOD_CONFIG = f"""
targets:
  - name: prod
    region_ids: [cn-hangzhou, cn-beijing]
    credentials: {{source: static, access_key_id: LTAI5tExample, access_key_secret: {SECRET}}}
  - name: lab
    region_id: eu-central-1
"""


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(GOOD_CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def clean_root_logger() -> Iterator[None]:
    """main() configures the root logger; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers = handlers
    root.setLevel(level)


def test_version() -> None:
    result = run_cli(["--version"])
    assert result.code == 0
    assert result.stdout.startswith(f"aliyun-cloudassistant-exporter {__version__}")


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "aliyun-cloudassistant-exporter"
    completed = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0
    assert __version__ in completed.stdout


def test_config_check_of_a_good_file_prints_a_summary_without_secrets(good_config: Path) -> None:
    result = run_cli(["--config.file", str(good_config), "--config.check"])
    assert result.code == 0, result.stderr
    assert result.stdout == (
        f"{good_config}: OK: 3 targets: prod/cn-hangzhou (static), prod/cn-beijing (static), "
        "lab/eu-central-1 (default)\n"
    )
    assert SECRET not in result.stdout + result.stderr


def test_config_check_warns_about_likely_mistakes_but_passes(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "targets:\n"
        "  - {name: a, region_id: cn-hangzou, credentials: {source: environment}}\n"
        "  - {name: b, region_id: xx-brand-new-1}\n",
        encoding="utf-8",
    )
    result = run_cli(["--config.file", str(config), "--config.check"])
    assert result.code == 0
    assert result.stderr.splitlines() == [
        "aliyun-cloudassistant-exporter: warning: a/cn-hangzou: region 'cn-hangzou', "
        "did you mean 'cn-hangzhou'?",
        "aliyun-cloudassistant-exporter: warning: a/cn-hangzou: credentials source "
        "'environment' but ALIBABA_CLOUD_ACCESS_KEY_ID is not set",
    ]


def test_config_check_of_a_bad_file_names_file_and_field() -> None:
    path = BAD_CONFIGS / "static_missing_access_key_id.yml"
    result = run_cli(["--config.file", str(path), "--config.check"])
    assert result.code == 2
    assert str(path) in result.stderr
    assert "targets[1].credentials.access_key_id: required field is missing" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr
    assert result.stdout == ""


def test_a_bad_file_at_start_up_gives_the_error_line_of_the_check() -> None:
    path = BAD_CONFIGS / "endpoint_with_credentials.yml"
    result = run_cli(["--config.file", str(path)])
    assert result.code == 2
    assert result.stderr == (
        f"aliyun-cloudassistant-exporter: error: config file {str(path)!r}: "
        "targets[0].endpoint: the URL must not contain credentials\n"
    )
    assert SECRET not in result.stderr


def test_a_missing_config_file_gives_one_error_line_at_start_and_under_check(
    tmp_path: Path,
) -> None:
    path = tmp_path / "absent.yml"
    expected = (
        f"aliyun-cloudassistant-exporter: error: config file {str(path)!r}: "
        "No such file or directory\n"
    )
    for extra in ([], ["--config.check"]):
        result = run_cli(["--config.file", str(path), *extra])
        assert (result.code, result.stdout, result.stderr) == (2, "", expected)


def _verdict(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of ``main(args)`` in this process; a run still going after 20 s
    (a configuration that started) is reported as such."""
    codes: list[int] = []
    run = threading.Thread(target=lambda: codes.append(main(args)), daemon=True)
    run.start()
    run.join(20)
    stderr = capsys.readouterr().err
    return (codes[0], stderr) if codes else (-1, f"still running: {stderr}")


@pytest.mark.parametrize("path", sorted(BAD_CONFIGS.glob("*.yml")), ids=lambda path: path.stem)
def test_a_bad_config_gets_the_same_verdict_from_check_and_start(
    capsys: pytest.CaptureFixture[str], clean_root_logger: None, path: Path
) -> None:
    checked = _verdict(["--config.file", str(path), "--config.check"], capsys)
    started = _verdict(["--config.file", str(path), "--web.listen-address", "127.0.0.1:0"], capsys)
    assert checked == started
    code, stderr = checked
    assert code == 2
    assert stderr.startswith(f"aliyun-cloudassistant-exporter: error: config file {str(path)!r}")
    assert SECRET not in stderr


BAD_ENVIRONMENTS = Path(__file__).parent / "bad_environments"


@pytest.mark.parametrize(
    "path", sorted(BAD_ENVIRONMENTS.glob("*.env")), ids=lambda path: str(path.stem)
)
def test_a_bad_environment_gets_the_same_verdict_from_check_and_start(
    capsys: pytest.CaptureFixture[str],
    clean_root_logger: None,
    monkeypatch: pytest.MonkeyPatch,
    path: Path,
) -> None:
    for name in list(os.environ):
        if name.startswith(("ALIYUN_CLOUDASSISTANT_", "ALIBABA_CLOUD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition("=")
        monkeypatch.setenv(name, value)
    checked = _verdict(["--config.check"], capsys)
    started = _verdict(["--web.listen-address", "127.0.0.1:0"], capsys)
    assert checked == started
    golden = path.with_suffix(".err").read_text(encoding="utf-8").rstrip("\n")
    assert checked == (
        2,
        f"aliyun-cloudassistant-exporter: error: {golden} (or give --config.file)\n",
    )


def test_the_readme_error_example_is_what_the_exporter_prints(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    [example] = [
        line
        for line in readme.splitlines()
        if line.startswith("aliyun-cloudassistant-exporter: error:")
    ]
    config = tmp_path / "config.yml"
    config.write_text("targets:\n  - name: a\n    region_id: cn-hangzhou\n    filter: {}\n")
    result = run_cli(["--config.file", str(config), "--config.check"])
    assert result.stderr == example.replace("'config.yml'", repr(str(config))) + "\n"


def test_config_check_from_the_environment() -> None:
    result = run_cli(
        ["--config.check"],
        env={
            "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou,cn-shanghai",
            "ALIYUN_CLOUDASSISTANT_ACCOUNT": "prod",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tExample",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        },
    )
    assert result.code == 0, result.stderr
    assert result.stdout == (
        "environment: OK: 2 targets: prod/cn-hangzhou (environment), "
        "prod/cn-shanghai (environment)\n"
    )


def test_no_config_at_all_says_what_to_set() -> None:
    result = run_cli(["--config.check"])
    assert result.code == 2
    assert "ALIYUN_CLOUDASSISTANT_REGIONS: required field is missing" in result.stderr
    assert "--config.file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_web_config_exits_2(tmp_path: Path, good_config: Path) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text("basic_auth_users:\n  prometheus: not-a-hash\n", encoding="utf-8")
    result = run_cli(["--config.file", str(good_config), "--web.config.file", str(web_config)])
    assert result.code == 2
    assert "basic_auth_users.prometheus" in result.stderr
    assert "not-a-hash" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (
            ["--web.listen-adress", ":9907"],
            "--web.listen-adress: did you mean --web.listen-address?",
        ),
        (["--config.chek"], "--config.chek: did you mean --config.check?"),
        (["-config.file", "x.yml"], "-config.file: did you mean --config.file?"),
        (["--log.level=debug", "--log-level=info"], "--log-level: did you mean --log.level?"),
        (["--log.level", "verbose"], "argument --log.level: invalid choice: 'verbose'"),
        (["--log.format", "xml"], "argument --log.format: invalid choice: 'xml'"),
        (["--web.listen-address", "9907"], "'9907' is not host:port"),
        (
            ["--web.listen-address", "h" * 100_000],
            f"argument --web.listen-address: {'h' * 64!r}... (100000 characters) is not host:port",
        ),
        (["--web.listen-address", ":http"], "the port must be a number"),
        (["--web.listen-address", ":70000"], "the port must be between 0 and 65535"),
        (["--web.telemetry-path", "metrics"], "must be a path like /metrics"),
        (["--web.telemetry-path", "/"], "must be a path like /metrics"),
        (["--web.telemetry-path", "/x/../metrics"], "or with a . or .. segment"),
        (["--demo", "--config.file", "x.yml"], "--demo cannot be combined with --config.file"),
    ],
)
def test_bad_flags_exit_2_with_usage(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("usage: aliyun-cloudassistant-exporter")
    assert expected in stderr


def test_a_bad_flag_in_a_real_process_has_no_traceback() -> None:
    result = run_cli(["--log.level=loud"])
    assert result.code == 2
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "name",
    ["invalid_yaml", "unknown_top_level_field", "static_secret_not_a_string", "too_many_tags"],
)
def test_config_check_in_process_for_bad_files(
    capsys: pytest.CaptureFixture[str], clean_root_logger: None, name: str
) -> None:
    path = BAD_CONFIGS / f"{name}.yml"
    expected = (BAD_CONFIGS / f"{name}.err").read_text(encoding="utf-8").splitlines()
    assert main(["--config.file", str(path), "--config.check"]) == 2
    stderr = capsys.readouterr().err
    for line in expected:
        assert line in stderr
    assert SECRET not in stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":9907", ("0.0.0.0", 9907)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9907", ("::1", 9907)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


def test_the_exporter_cannot_bind_a_used_port(good_config: Path) -> None:
    with taken_loopback_port() as port:
        result = run_cli(
            ["--config.file", str(good_config), "--web.listen-address", f"127.0.0.1:{port}"]
        )
    assert result.code == 1
    assert 'msg="cannot listen"' in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_serves_live_metrics_from_the_simulator(start_exporter: StartExporter) -> None:
    exporter = start_exporter(["--demo"])
    deadline = time.monotonic() + 20
    while True:
        text = httpx.get(exporter.url + "/metrics", timeout=30).text
        if 'aliyun_cloudassistant_up{account="demo",region_id="cn-beijing"} 1.0' in text:
            break
        assert time.monotonic() < deadline, exporter.log_text()
        time.sleep(0.1)
    assert 'aliyun_cloudassistant_up{account="demo",region_id="cn-hangzhou"} 1.0' in text
    assert httpx.get(exporter.url + "/-/ready").status_code == 200
    assert exporter.stop() == 0


def test_help_lists_every_environment_variable() -> None:
    result = run_cli(["--help"])
    assert result.code == 0
    for name in known_variables():
        section, _, key = name.partition("__")
        if key:
            assert f"{section}__<KEY>" in result.stdout
            assert key in result.stdout
        else:
            assert name in result.stdout
    for name in ("ALIYUN_CLOUDASSISTANT_USE_VPC_ENDPOINT", "ALIYUN_CLOUDASSISTANT_SECRETS_DIR"):
        assert name in result.stdout


def _one_quick_error_line(args: list[str], env: dict[str, str] | None = None) -> str:
    """Run the exporter to its exit, which must be 2 with one line; a run that hangs (a bcrypt
    hash computed at a huge cost, a huge file read) fails at run_cli's timeout."""
    result = run_cli(args, env=env, timeout=30)
    assert result.code == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("check", [True, False], ids=["check", "start"])
def test_a_web_config_of_bcrypt_cost_31_exits_2_at_once(
    tmp_path: Path, good_config: Path, check: bool
) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text("basic_auth_users:\n  alice: '$2b$31$" + "a" * 53 + "'\n")
    args = ["--config.file", str(good_config), "--web.config.file", str(web_config)]
    line = _one_quick_error_line([*args, "--config.check"] if check else args)
    assert "basic_auth_users.alice: bcrypt cost 31 is above 14" in line


@pytest.mark.parametrize("check", [True, False], ids=["check", "start"])
def test_a_huge_secrets_dir_file_exits_2_at_once(tmp_path: Path, check: bool) -> None:
    secret = tmp_path / "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
    with secret.open("wb") as file:
        file.truncate(64 * 1024 * 1024)  # 64 MB of NUL bytes
    env = {
        "ALIYUN_CLOUDASSISTANT_SECRETS_DIR": str(tmp_path),
        "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tExample",
    }
    line = _one_quick_error_line(["--config.check"] if check else [], env)
    assert line == (
        "aliyun-cloudassistant-exporter: error: environment: "
        "ALIYUN_CLOUDASSISTANT_SECRETS_DIR: the file ALIBABA_CLOUD_ACCESS_KEY_SECRET is larger "
        "than 65536 bytes (or give --config.file)\n"
    )
    assert os.path.getsize(secret) == 64 * 1024 * 1024


def test_the_environment_endpoint_conflict_names_the_variables() -> None:
    line = _one_quick_error_line(
        ["--config.check"],
        {
            "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
            "ALIYUN_CLOUDASSISTANT_ENDPOINT": "http://127.0.0.1:1",
            "ALIYUN_CLOUDASSISTANT_USE_VPC_ENDPOINT": "true",
        },
    )
    assert line == (
        "aliyun-cloudassistant-exporter: error: environment: give at most one of "
        "ALIYUN_CLOUDASSISTANT_ENDPOINT and ALIYUN_CLOUDASSISTANT_USE_VPC_ENDPOINT "
        "(or give --config.file)\n"
    )


@pytest.mark.parametrize("name", ["secret_in_an_alias_and_a_key", "secret_key_in_place_of_a_field"])
def test_a_secret_reused_by_an_alias_or_written_as_a_key_never_shows(name: str) -> None:
    path = BAD_CONFIGS / f"{name}.yml"
    for extra in (["--config.check"], ["--web.listen-address", "127.0.0.1:0"]):
        result = run_cli(["--config.file", str(path), *extra], timeout=30)
        assert result.code == 2
        assert result.stderr.startswith("aliyun-cloudassistant-exporter: error: config file ")
        assert SECRET not in result.stdout + result.stderr
