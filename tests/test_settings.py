"""The configuration: good files, the environment-only case, and every bad file's error."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.ecs.models import InvocationQuery
from exporter.ecs.request import parse_endpoint
from exporter.refresh.options import RefreshOptions
from exporter.settings import (
    ConfigError,
    EcsRamRoleCredentialsSettings,
    ExporterSettings,
    StaticCredentialsSettings,
    load_config_file,
    load_environment,
)
from exporter.settings.models import SUMMARY_TARGETS
from exporter.settings.translate import secret_values_in
from exporter.targets import refresh_options

BAD_CONFIGS = Path(__file__).parent / "bad_configs"
EXAMPLE_CONFIG = Path(__file__).parent.parent / "examples" / "config.yml"
# Every bad config that holds a secret uses this value.
LEAKED_SECRET = "Sup3rS3cretValue-DoNotLeak"
ENVIRONMENT_NAMES = (
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
    "ALIYUN_CLOUDASSISTANT_REGIONS",
    "ALIYUN_CLOUDASSISTANT_ACCOUNT",
    "ALIYUN_CLOUDASSISTANT_ENDPOINT",
    "ALIYUN_CLOUDASSISTANT_SECRETS_DIR",
    "ALIYUN_CLOUDASSISTANT_REFRESH__MIN_INTERVAL_SECONDS",
)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")
    return path


def write_static_target_config(tmp_path: Path, credentials: dict[str, str], **options: Any) -> Path:
    """A config file of one target, prod/cn-hangzhou, with target ``options`` and static
    credentials: the key id ``LTAI5tExample`` and the fields in ``credentials``."""
    target = {
        "name": "prod",
        "region_id": "cn-hangzhou",
        "credentials": {"source": "static", "access_key_id": "LTAI5tExample", **credentials},
        **options,
    }
    return write_config(tmp_path, yaml.safe_dump({"targets": [target]}))


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any variable the settings read."""
    for name in ENVIRONMENT_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_target_with_several_regions_becomes_one_target_per_region(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
targets:
  - name: prod
    region_ids: [cn-hangzhou, ap-southeast-1]
    credentials: {source: static, access_key_id: LTAI5tExample, access_key_secret: s3cr3t-value}
    filters:
      command_id: c-hz0jdfwcsr
      tags: {team: sre, env: ""}
    page_cap: 20
  - name: staging
    region_id: cn-beijing
    endpoint: http://127.0.0.1:8080
""",
    )
    settings = load_config_file(path)
    targets = settings.expanded_targets()
    assert [(t.account, t.region_id) for t in targets] == [
        ("prod", "cn-hangzhou"),
        ("prod", "ap-southeast-1"),
        ("staging", "cn-beijing"),
    ]
    prod = targets[0]
    assert prod.query == InvocationQuery(
        command_id="c-hz0jdfwcsr", tags=(("team", "sre"), ("env", ""))
    )
    assert prod.page_cap == 20
    staging = targets[2]
    assert staging.endpoint == "http://127.0.0.1:8080"
    assert staging.credentials.source == "default"
    assert staging.page_cap == settings.refresh.page_cap == 200


def test_include_history_is_a_target_option_with_one_spelling(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
targets:
  - name: fleet
    region_id: cn-hangzhou
    include_history: true
  - name: one-task
    region_id: cn-hangzhou
    filters: {invoke_id: t-hz0jdfwd9f}
    include_history: true
  - name: plain
    region_id: cn-hangzhou
""",
    )
    fleet, one_task, plain = load_config_file(path).expanded_targets()
    assert fleet.include_history
    assert fleet.query == InvocationQuery()
    assert one_task.include_history
    assert one_task.query == InvocationQuery(invoke_id="t-hz0jdfwd9f")
    assert not plain.include_history
    # The old spelling under filters is refused with the way to write it.
    old = write_config(
        tmp_path,
        "targets: [{name: a, region_id: cn-hangzhou, "
        "filters: {invoke_id: t-hz0jdfwd9f, include_history: true}}]\n",
    )
    hint = r"targets\[0\]\.filters: include_history is not a filter: write include_history: true"
    with pytest.raises(ConfigError, match=hint):
        load_config_file(old)


def test_defaults_of_the_global_sections(tmp_path: Path) -> None:
    settings = load_config_file(
        write_config(tmp_path, "targets: [{name: a, region_id: cn-hangzhou}]\n")
    )
    assert settings.refresh.min_interval_seconds == 30
    assert settings.refresh.sweep_interval_seconds == 600
    assert settings.refresh.page_cap == 200
    assert settings.refresh.workers is None  # one per target (exporter.app.refresh_workers)
    assert settings.refresh.tracking_cap == 50000
    assert settings.refresh.scrape_max_wait_seconds == 9
    assert settings.api.rate_limit_per_second == 5
    assert settings.api.burst == 5
    assert settings.api.max_results == 50


def test_refresh_options_follow_the_config_and_share_its_defaults(tmp_path: Path) -> None:
    """The refresher's defaults are the config's (one default, whichever way a target is built),
    and every refresh setting reaches the target's options."""
    target = "targets: [{name: a, region_id: cn-hangzhou}]\n"
    defaults = load_config_file(write_config(tmp_path, target))
    (expanded,) = defaults.expanded_targets()
    built = refresh_options(defaults, expanded)
    fresh = RefreshOptions()
    for setting, option in (
        (defaults.refresh.min_interval_seconds, fresh.min_refresh_interval),
        (defaults.refresh.sweep_interval_seconds, fresh.sweep_interval),
        (defaults.refresh.sweep_max_backoff, fresh.sweep_backoff),
        (defaults.refresh.sweep_pages_per_refresh, fresh.sweep_pages_per_refresh),
        (defaults.refresh.page_cap, fresh.page_cap),
        (defaults.refresh.tracking_cap, fresh.tracking_cap),
    ):
        assert setting == option
    assert built == fresh

    tuned = load_config_file(
        write_config(
            tmp_path,
            target + "refresh: {sweep_interval_seconds: 900, sweep_max_backoff: 1, "
            "sweep_pages_per_refresh: 0}\n",
        )
    )
    options = refresh_options(tuned, tuned.expanded_targets()[0])
    assert (options.sweep_interval, options.sweep_backoff, options.sweep_pages_per_refresh) == (
        900,
        1,
        0,
    )


def test_tags_as_a_list_equal_tags_as_a_mapping(tmp_path: Path) -> None:
    as_list = load_config_file(
        write_config(
            tmp_path,
            "targets: [{name: a, region_id: cn-hangzhou, "
            "filters: {tags: [{key: team, value: sre}, {key: env}]}}]\n",
        )
    )
    as_mapping = load_config_file(
        write_config(
            tmp_path,
            "targets: [{name: a, region_id: cn-hangzhou, filters: {tags: {team: sre, env: }}}]\n",
        )
    )
    assert as_list.expanded_targets()[0].query == as_mapping.expanded_targets()[0].query


def test_secrets_are_read_from_files_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "ak_secret").write_text("from-a-file-secret\n", encoding="utf-8")
    (tmp_path / "sts_token").write_text("from-a-file-token\n", encoding="utf-8")
    path = write_static_target_config(
        tmp_path,
        {
            "access_key_secret_file": str(tmp_path / "ak_secret"),
            "security_token_file": str(tmp_path / "sts_token"),
        },
    )
    credentials = load_config_file(path).targets[0].credentials
    assert isinstance(credentials, StaticCredentialsSettings)
    assert credentials.secret.get_secret_value() == "from-a-file-secret"
    assert credentials.security_token is not None
    assert credentials.security_token.get_secret_value() == "from-a-file-token"


def test_secrets_never_appear_in_repr_or_summary(tmp_path: Path) -> None:
    path = write_static_target_config(
        tmp_path,
        {"access_key_secret": LEAKED_SECRET, "security_token": f"{LEAKED_SECRET}-token"},
        assume_role={"role_arn": "acs:ram::1234567890:role/reader"},
    )
    settings = load_config_file(path)
    for text in (
        repr(settings),
        str(settings),
        settings.summary(),
        repr(settings.expanded_targets()),
    ):
        assert LEAKED_SECRET not in text
    assert settings.summary() == "1 target: prod/cn-hangzhou (static+assume_role)"
    assert set(settings.secret_values()) == {LEAKED_SECRET, f"{LEAKED_SECRET}-token"}


def test_other_credential_sources(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOi", encoding="utf-8")
    path = write_config(
        tmp_path,
        f"""
targets:
  - name: rrsa
    region_id: cn-hangzhou
    credentials:
      source: oidc_role
      role_arn: acs:ram::1234567890:role/exporter
      oidc_provider_arn: acs:ram::1234567890:oidc-provider/ack-rrsa
      oidc_token_file: {token}
  - name: instance
    region_id: cn-hangzhou
    credentials: {{source: ecs_ram_role, role_name: exporter, metadata_url: "http://127.0.0.1:1"}}
  - name: env
    region_id: cn-hangzhou
    credentials: {{source: environment}}
    use_vpc_endpoint: true
""",
    )
    targets = load_config_file(path).expanded_targets()
    assert [t.credentials.source for t in targets] == ["oidc_role", "ecs_ram_role", "environment"]
    assert isinstance(targets[1].credentials, EcsRamRoleCredentialsSettings)
    assert targets[1].credentials.role_name == "exporter"
    assert targets[2].use_vpc_endpoint


def test_the_example_config_is_valid() -> None:
    settings = load_config_file(EXAMPLE_CONFIG)
    assert len(settings.expanded_targets()) >= 2


def _bad_config_cases() -> list[tuple[str, Path, str]]:
    return [
        (path.stem, path, path.with_suffix(".err").read_text(encoding="utf-8").rstrip("\n"))
        for path in sorted(BAD_CONFIGS.glob("*.yml"))
    ]


# Pydantic's own phrases: a user must never read them.
LIBRARY_WORDING = ("Input should", "List should", "String should", "Value error", "validation")


@pytest.mark.parametrize(
    ("path", "expected"),
    [pytest.param(path, expected, id=name) for name, path, expected in _bad_config_cases()],
)
def test_bad_config_is_refused_with_its_golden_error(path: Path, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    message = str(caught.value)
    assert message == f"config file {str(path)!r}: {expected}"
    assert LEAKED_SECRET not in message
    assert LEAKED_SECRET not in repr(caught.value)
    for phrase in LIBRARY_WORDING:
        assert phrase not in message


def test_every_bad_config_has_its_expected_error() -> None:
    names = {path.stem for path in BAD_CONFIGS.glob("*.yml")}
    assert names == {path.stem for path in BAD_CONFIGS.glob("*.err")}
    assert len(names) >= 30


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_config_file(tmp_path / "absent.yml")


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
targets:
  - name: a
    region_id: cn_hangzhou
  - name: b
    region_id: cn-hangzhou
    page_cap: -1
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert [str(problem.path) for problem in caught.value.problems] == [
        "targets[0].region_id",
        "targets[1].page_cap",
    ]


# --- the environment-only configuration ------------------------------------------------------


def test_environment_with_an_access_key(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tExample")
    clean_environment.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", LEAKED_SECRET)
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_REGIONS", "cn-hangzhou, cn-beijing")
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_ACCOUNT", "prod")
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_ENDPOINT", "http://127.0.0.1:9999")
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_REFRESH__MIN_INTERVAL_SECONDS", "15")
    settings = load_environment()
    targets = settings.expanded_targets()
    assert [(t.account, t.region_id, t.endpoint) for t in targets] == [
        ("prod", "cn-hangzhou", "http://127.0.0.1:9999"),
        ("prod", "cn-beijing", "http://127.0.0.1:9999"),
    ]
    credentials = targets[0].credentials
    assert isinstance(credentials, StaticCredentialsSettings)
    assert credentials.access_key_id == "LTAI5tExample"
    assert settings.refresh.min_interval_seconds == 15
    assert LEAKED_SECRET not in repr(settings)


def test_environment_without_an_access_key_uses_the_default_chain(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_REGIONS", "cn-shanghai")
    settings = load_environment()
    [target] = settings.expanded_targets()
    assert (target.account, target.region_id) == ("default", "cn-shanghai")
    assert target.credentials.source == "default"


def test_environment_secret_from_a_secrets_dir(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "ALIBABA_CLOUD_ACCESS_KEY_SECRET").write_text("mounted-secret\n", encoding="utf-8")
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_SECRETS_DIR", str(tmp_path))
    clean_environment.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tExample")
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_REGIONS", "cn-hangzhou")
    credentials = load_environment().targets[0].credentials
    assert isinstance(credentials, StaticCredentialsSettings)
    assert credentials.secret.get_secret_value() == "mounted-secret"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        pytest.param(
            {}, "ALIYUN_CLOUDASSISTANT_REGIONS: required field is missing", id="no-regions"
        ),
        pytest.param(
            {"ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou,hangzhou"},
            "ALIYUN_CLOUDASSISTANT_REGIONS[1]: 'hangzhou' is not a region id",
            id="bad-region",
        ),
        pytest.param(
            {"ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou", "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI"},
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET is required when ALIBABA_CLOUD_ACCESS_KEY_ID is set",
            id="id-without-secret",
        ),
        pytest.param(
            {
                "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
                "ALIYUN_CLOUDASSISTANT_ENDPOINT": "ftp://x",
            },
            "ALIYUN_CLOUDASSISTANT_ENDPOINT: 'ftp://x': the scheme must be http or https",
            id="bad-endpoint",
        ),
        pytest.param(
            {
                "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
                "ALIYUN_CLOUDASSISTANT_REFRESH__MIN_INTERVAL_SECONDS": "0",
            },
            "ALIYUN_CLOUDASSISTANT_REFRESH__MIN_INTERVAL_SECONDS: must be more than 0",
            id="bad-nested",
        ),
        pytest.param(
            {"ALIYUN_CLOUDASSISTANT_SECRETS_DIR": "/nonexistent"},
            "ALIYUN_CLOUDASSISTANT_SECRETS_DIR: '/nonexistent' is not a directory",
            id="bad-secrets-dir",
        ),
        pytest.param(
            {
                "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
                "ALIYUN_CLOUDASSISTANT_API__TIMEOUT_SECONDS": "soon",
            },
            "ALIYUN_CLOUDASSISTANT_API__TIMEOUT_SECONDS: must be a number",
            id="nested-not-a-number",
        ),
        pytest.param(
            {"ALIYUN_CLOUDASSISTANT_REGIONS": " , ,"},
            "ALIYUN_CLOUDASSISTANT_REGIONS: must have at least 1 item",
            id="only-commas",
        ),
        pytest.param(
            {
                "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
                "ALIYUN_CLOUDASSISTANT_ACCOUNT": "a b",
            },
            "ALIYUN_CLOUDASSISTANT_ACCOUNT: 'a b' is not a valid name",
            id="bad-account",
        ),
        pytest.param(
            {
                "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
                "ALIYUN_CLOUDASSISTANT_REFRESH": '{"min_interval_seconds": ',
            },
            "ALIYUN_CLOUDASSISTANT_REFRESH: not valid JSON",
            id="section-not-json",
        ),
        pytest.param(
            {
                "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
                "ALIYUN_CLOUDASSISTANT_ENDPIONT": "http://127.0.0.1:8080",
            },
            "ALIYUN_CLOUDASSISTANT_ENDPIONT: unknown variable, did you mean "
            "ALIYUN_CLOUDASSISTANT_ENDPOINT?",
            id="misspelled-variable",
        ),
        pytest.param(
            {
                "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
                "ALIYUN_CLOUDASSISTANT_ENDPOINT": "http://127.0.0.1:8080",
                "ALIYUN_CLOUDASSISTANT_USE_VPC_ENDPOINT": "true",
            },
            "environment: give at most one of ALIYUN_CLOUDASSISTANT_ENDPOINT and "
            "ALIYUN_CLOUDASSISTANT_USE_VPC_ENDPOINT",
            id="endpoint-and-vpc-endpoint",
        ),
        pytest.param(
            {
                "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
                "ALIYUN_CLOUDASSISTANT_USE_VPC_ENDPOINT": "maybe",
            },
            "environment: ALIYUN_CLOUDASSISTANT_USE_VPC_ENDPOINT: must be true or false",
            id="vpc-not-a-boolean",
        ),
        pytest.param(
            {
                "ALIYUN_CLOUDASSISTANT_REGIONS": "cn-hangzhou",
                "ALIYUN_CLOUDASSISTANT_ENDPOINT": "https://ecs.example.com/some/path",
            },
            "ALIYUN_CLOUDASSISTANT_ENDPOINT: 'https://ecs.example.com/some/path': must not "
            "have a path, query or fragment",
            id="endpoint-with-path",
        ),
    ],
)
def test_bad_environment_names_the_variable(
    clean_environment: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    for name, value in variables.items():
        clean_environment.setenv(name, value)
    clean_environment.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", LEAKED_SECRET)
    with pytest.raises(ConfigError) as caught:
        load_environment()
    assert str(caught.value).startswith("environment: ")
    assert expected in str(caught.value)
    assert LEAKED_SECRET not in str(caught.value)


def test_kubernetes_service_link_variables_are_not_typos(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_REGIONS", "cn-hangzhou")
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_EXPORTER_SERVICE_HOST", "10.0.0.1")
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_EXPORTER_PORT", "tcp://10.0.0.1:9907")
    assert [t.region_id for t in load_environment().expanded_targets()] == ["cn-hangzhou"]


def test_settings_are_immutable(tmp_path: Path) -> None:
    settings = load_config_file(
        write_config(tmp_path, "targets: [{name: a, region_id: cn-hangzhou}]\n")
    )
    with pytest.raises(ValueError, match="frozen"):
        settings.targets = []
    assert isinstance(settings, ExporterSettings)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            b"\0" * (64 * 1024 + 1), "is larger than 65536 bytes", id="larger-than-the-cap"
        ),
        pytest.param(b"\0" * 1024, "contains non-printable characters", id="nul-bytes"),
        pytest.param(b"two\nlines", "contains non-printable characters", id="two-lines"),
        pytest.param(b" \n", "is empty", id="empty"),
    ],
)
def test_secrets_dir_files_follow_the_secret_file_rules(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path, content: bytes, expected: str
) -> None:
    (tmp_path / "ALIBABA_CLOUD_ACCESS_KEY_SECRET").write_bytes(content)
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_SECRETS_DIR", str(tmp_path))
    clean_environment.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tExample")
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_REGIONS", "cn-hangzhou")
    with pytest.raises(ConfigError) as caught:
        load_environment()
    assert str(caught.value) == (
        "environment: ALIYUN_CLOUDASSISTANT_SECRETS_DIR: the file "
        f"ALIBABA_CLOUD_ACCESS_KEY_SECRET {expected}"
    )


def test_config_file_secrets_follow_the_same_rules(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"\0" * 1024)
    path = write_static_target_config(
        tmp_path, {"access_key_secret_file": str(tmp_path / "secret")}
    )
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert str(caught.value).endswith(
        f"targets[0].credentials: cannot read access_key_secret_file "
        f"{str(tmp_path / 'secret')!r}: contains non-printable characters"
    )


def test_an_access_key_from_the_environment_is_labelled_environment_in_both_modes(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_environment.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tExample")
    clean_environment.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", LEAKED_SECRET)
    clean_environment.setenv("ALIYUN_CLOUDASSISTANT_REGIONS", "cn-hangzhou")
    from_variables = load_environment()
    from_file = load_config_file(
        write_config(
            tmp_path,
            "targets: [{name: default, region_id: cn-hangzhou, "
            "credentials: {source: environment}}]\n",
        )
    )
    assert from_variables.summary() == from_file.summary()
    assert from_variables.summary() == "1 target: default/cn-hangzhou (environment)"


def test_the_simulator_banner_endpoint_works_as_a_config_endpoint(tmp_path: Path) -> None:
    simulator = subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator", "--listen", "127.0.0.1:0"],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert simulator.stdout is not None
        lines = iter(simulator.stdout.readline, "")
        endpoint = next(line for line in lines if line.strip().startswith("endpoint:"))
    finally:
        simulator.terminate()
        simulator.wait(15)
        if simulator.stdout is not None:
            simulator.stdout.close()
    value = endpoint.split(":", 1)[1].strip()
    settings = load_config_file(
        write_config(
            tmp_path, f"targets: [{{name: a, region_id: cn-hangzhou, endpoint: '{value}'}}]\n"
        )
    )
    # Pasted as printed, it reaches the simulator over plain HTTP, as the client reads it.
    assert parse_endpoint(settings.expanded_targets()[0].endpoint or "")[0].startswith("http://")


BAD_ENVIRONMENTS = Path(__file__).parent / "bad_environments"


def read_environment_case(path: Path) -> dict[str, str]:
    """The variables of a ``tests/bad_environments/NAME.env`` file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line)


@pytest.mark.parametrize(
    "path", sorted(BAD_ENVIRONMENTS.glob("*.env")), ids=lambda path: str(path.stem)
)
def test_bad_environment_is_refused_with_its_golden_error(path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_environment(read_environment_case(path))
    message = str(caught.value)
    assert message == path.with_suffix(".err").read_text(encoding="utf-8").rstrip("\n")
    assert LEAKED_SECRET not in message
    for phrase in LIBRARY_WORDING:
        assert phrase not in message


def test_every_bad_environment_has_its_expected_error() -> None:
    names = {path.stem for path in BAD_ENVIRONMENTS.glob("*.env")}
    assert names == {path.stem for path in BAD_ENVIRONMENTS.glob("*.err")}
    assert len(names) >= 10


def test_an_unknown_key_far_from_any_field_is_not_repeated(tmp_path: Path) -> None:
    # An AccessKey secret is letters and digits: pasted without its field name, it is a key.
    secret = "Xk29dkKdA8sLqP0zT3vN7mB1cR5wYq"
    path = write_config(
        tmp_path,
        "targets: [{name: a, region_id: cn-hangzhou, credentials: "
        f"{{source: static, access_key_id: LTAI5tExample, {secret}}}}}]\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert str(caught.value).endswith(
        "targets[0].credentials.<unknown key>: not a field name (the key is not shown; "
        "check spelling and indentation)"
    )
    assert secret not in str(caught.value)
    # A typo close to a field is repeated, with the field it is close to.
    typo = write_config(tmp_path, "targets: [{name: a, region_id: cn-hangzhou, page_capp: 5}]\n")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.page_capp: unknown field, did you mean"):
        load_config_file(typo)


def test_secret_strings_are_found_once_in_a_shared_structure() -> None:
    """The walk that finds the secrets to mask reads each list once, however many aliases
    name it: a structure that stands for 9^12 values is read in a moment."""
    shared: object = [{"access_key_secret": "Sup3rS3cretValue-DoNotLeak"}, "lol"]
    for _ in range(12):
        shared = [shared] * 9
    found: list[list[str]] = []
    walk = threading.Thread(target=lambda: found.append(secret_values_in(shared)), daemon=True)
    walk.start()
    walk.join(10)
    assert found == [["Sup3rS3cretValue-DoNotLeak"]]


def test_a_long_secret_reused_as_a_name_is_masked_before_the_name_is_cut(tmp_path: Path) -> None:
    token = "StsT0ken" * 40  # 320 characters: a cut of the name would leave a part unmasked
    path = write_config(
        tmp_path,
        f"targets:\n  - name: x{token}\n    region_id: cn-hangzhou\n"
        "    credentials: {source: static, access_key_id: LTAI5tExample,\n"
        f"                  access_key_secret: abcd1234, security_token: {token}}}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    message = str(caught.value)
    assert message.endswith(
        "targets[0].name: 'x<redacted>' is not a valid name (1-64 letters, "
        "digits or _ . @ : -, starting with a letter or digit)"
    )
    assert "StsT0ken" not in message


def test_the_summary_and_doubts_of_a_fleet_name_its_first_targets_and_count_the_rest(
    tmp_path: Path,
) -> None:
    # --config.check printed one line naming every target: 600 kB for 20,000 of them.
    accounts = [
        {
            "name": f"acct{n}",
            "region_ids": ["cn-hangzhou", "cn-hangzou"],
            "credentials": {"source": "environment"},
        }
        for n in range(SUMMARY_TARGETS)
    ]
    path = tmp_path / "fleet.yml"
    path.write_text(yaml.safe_dump({"targets": accounts}), encoding="utf-8")
    settings = load_config_file(path)
    named = ", ".join(
        f"acct{n}/{region} (environment)"
        for n in range(SUMMARY_TARGETS // 2)
        for region in ("cn-hangzhou", "cn-hangzou")
    )
    assert settings.summary() == (
        f"{2 * SUMMARY_TARGETS} targets: {named} and {SUMMARY_TARGETS} more"
    )
    # One line for a misspelt region, naming the first targets in it and counting the rest (a
    # line per target gave 10,000 lines for a fleet's file).
    typos = [w for w in settings.warnings({"ALIBABA_CLOUD_ACCESS_KEY_ID": "x"}) if "did you" in w]
    assert typos == [
        ", ".join(f"acct{n}/cn-hangzou" for n in range(SUMMARY_TARGETS))
        + ": region 'cn-hangzou', did you mean 'cn-hangzhou'?"
    ]
    labels = ", ".join(
        f"acct{n}/{region}"
        for n in range(SUMMARY_TARGETS // 2)
        for region in ("cn-hangzhou", "cn-hangzou")
    )
    assert (  # every target's credentials miss the variable
        f"{labels} and {SUMMARY_TARGETS} more: credentials source 'environment' but "
        "ALIBABA_CLOUD_ACCESS_KEY_ID is not set"
    ) in settings.warnings({})
