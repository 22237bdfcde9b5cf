"""Loading the configuration: the YAML file when one is given, else the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from exporter.files import load_yaml_file
from exporter.settings.environment import load_environment
from exporter.settings.models import ExporterSettings
from exporter.settings.problems import ConfigError
from exporter.settings.translate import problems_from, secret_values_in


def load_config_file(path: Path) -> ExporterSettings:
    """Read and validate a YAML config file; raises :class:`ConfigError` naming ``path``."""
    source = f"config file {str(path)!r}"
    try:
        data = load_yaml_file(path)
    except ValueError as exc:
        raise ConfigError.single(source, str(exc)) from None
    if data is None:
        raise ConfigError.single(source, "the file is empty")
    if not isinstance(data, dict):
        message = f"expected a mapping with 'targets' at the top, got a {type(data).__name__}"
        raise ConfigError.single(source, message)
    try:
        return ExporterSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_from(exc, secret_values_in(data))) from None
    except RecursionError:  # a guard: exporter.files already refuses recursive aliases
        message = "the structure is nested too deeply (a recursive YAML alias?)"
        raise ConfigError.single(source, message) from None


def load_settings(config_file: Path | None) -> ExporterSettings:
    """The configuration: the file when one is given, else the environment (``os.environ``)."""
    if config_file is not None:
        return load_config_file(config_file)
    return load_environment()
