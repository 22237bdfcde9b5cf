"""The exporter's configuration: a YAML file, or the environment for the one-account case.

* :mod:`~exporter.settings.models`: the sections of the config file and their rules;
* :mod:`~exporter.settings.fields`: value types, each with its rule (the runtime's, where the
  runtime checks the value too);
* :mod:`~exporter.settings.environment`: the one-account configuration from variables;
* :mod:`~exporter.settings.translate`: validation errors as plain, secret-free problems;
* :mod:`~exporter.settings.loading`: :func:`load_settings`, the entry point.

Every mistake becomes a :class:`ConfigError` naming the source, the field as a dotted path
(``targets[1].credentials.access_key_id``) or the variable, and what is wrong.
"""

from exporter.settings.environment import (
    ENV_PREFIX,
    SECRET_VARIABLES,
    SECRETS_DIR_VARIABLE,
    known_variables,
    load_environment,
    nested_variables,
    variables_help,
)
from exporter.settings.loading import load_config_file, load_settings
from exporter.settings.models import (
    CREDENTIAL_SOURCES,
    KNOWN_REGIONS,
    ApiSettings,
    AssumeRoleSettings,
    CommandBreakdownSettings,
    DefaultChainCredentialsSettings,
    EcsRamRoleCredentialsSettings,
    EnvironmentCredentialsSettings,
    ExporterSettings,
    FilterSettings,
    OidcRoleCredentialsSettings,
    RefreshSettings,
    StaticCredentialsSettings,
    Target,
    TargetSettings,
)
from exporter.settings.problems import ConfigError, ConfigProblem

__all__ = [
    "CREDENTIAL_SOURCES",
    "ENV_PREFIX",
    "KNOWN_REGIONS",
    "SECRETS_DIR_VARIABLE",
    "SECRET_VARIABLES",
    "ApiSettings",
    "AssumeRoleSettings",
    "CommandBreakdownSettings",
    "ConfigError",
    "ConfigProblem",
    "DefaultChainCredentialsSettings",
    "EcsRamRoleCredentialsSettings",
    "EnvironmentCredentialsSettings",
    "ExporterSettings",
    "FilterSettings",
    "OidcRoleCredentialsSettings",
    "RefreshSettings",
    "StaticCredentialsSettings",
    "Target",
    "TargetSettings",
    "known_variables",
    "load_config_file",
    "load_environment",
    "load_settings",
    "nested_variables",
    "variables_help",
]
