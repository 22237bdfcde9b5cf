"""From pydantic's validation errors to :class:`ConfigProblem` lines a user can act on.

Paths are written as in the file (``targets[1].credentials.access_key_id``), messages in plain
words (:mod:`exporter.validation`), typos get a did-you-mean, and no message shows the value of
a secret field, however the file wrote it (inline, a YAML alias reused elsewhere, a key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from exporter.settings.models import (
    CREDENTIAL_SOURCES,
    SECRET_FIELDS,
    ApiSettings,
    AssumeRoleSettings,
    CommandBreakdownSettings,
    EcsRamRoleCredentialsSettings,
    ExporterSettings,
    FilterSettings,
    OidcRoleCredentialsSettings,
    RefreshSettings,
    StaticCredentialsSettings,
    TagSettings,
    TargetSettings,
)
from exporter.settings.problems import ConfigProblem
from exporter.validation import (
    MAX_SHOWN_CHARS,
    did_you_mean,
    plain_message,
    redact,
    shown_key,
    shown_value,
)

_SOURCES_TEXT: Final = ", ".join(CREDENTIAL_SOURCES)


def dotted_path(loc: Sequence[int | str]) -> str:
    """``('targets', 1, 'credentials', 'static', 'access_key_id')`` -> the path a user wrote.

    The discriminator tag pydantic inserts after ``credentials`` is not part of the file, and a
    key that may not be repeated (see :func:`exporter.validation.shown_key`) is replaced.
    """
    path = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (previous == "credentials" and part in CREDENTIAL_SOURCES):
            name = shown_key(part) or "<key>"
            path += f".{name}" if path else name
        previous = part
    return path


_SECTIONS: Final[dict[type[BaseModel], str]] = {
    ExporterSettings: "at the top level",
    TargetSettings: "in a target",
    StaticCredentialsSettings: "in credentials",
    EcsRamRoleCredentialsSettings: "in credentials",
    OidcRoleCredentialsSettings: "in credentials",
    AssumeRoleSettings: "in assume_role",
    FilterSettings: "in filters",
    TagSettings: "in a tag",
    CommandBreakdownSettings: "in command_breakdown",
    RefreshSettings: "in refresh",
    ApiSettings: "in api",
}
_KNOWN_FIELDS: Final = sorted({name for section in _SECTIONS for name in section.model_fields})


def _unknown_field(loc: Sequence[int | str]) -> tuple[str, str]:
    """The path and message of an unknown key.

    The key is repeated only when it is a field name or close to one (a typo): any other key
    may be a value written in the wrong place (``{access_key_id: x, Sup3rS3cret}``).
    """
    name = shown_key(loc[-1]) if loc else None
    parent = dotted_path(loc[:-1])
    close = did_you_mean(name, _KNOWN_FIELDS) if name is not None else None
    if name is None or (name not in _KNOWN_FIELDS and close is None):
        where = f"{parent}.<unknown key>" if parent else "<unknown key>"
        return where, "not a field name (the key is not shown; check spelling and indentation)"
    path = f"{parent}.{name}" if parent else name
    places = sorted({where for section, where in _SECTIONS.items() if name in section.model_fields})
    if places:  # a real key in the wrong section
        return path, f"not a field here: {name!r} belongs {' or '.join(places)}"
    return path, f"unknown field, did you mean {close!r}?"


def _source_message(detail: Mapping[str, Any]) -> str:
    if detail["type"] == "union_tag_not_found":
        return f"'source' is missing (one of: {_SOURCES_TEXT})"
    tag = (detail.get("ctx") or {}).get("tag")
    shown = shown_key(tag)
    if shown is None:
        return f"unknown 'source' (one of: {_SOURCES_TEXT})"
    close = did_you_mean(shown, CREDENTIAL_SOURCES)
    hint = f", did you mean {close!r}?" if close else f" (one of: {_SOURCES_TEXT})"
    return f"unknown source {shown!r}{hint}"


def problems_from(error: ValidationError, secrets: Sequence[str] = ()) -> list[ConfigProblem]:
    """Plain, secret-free problems from a validation error; ``secrets`` are masked wherever
    they would appear (see :func:`secret_values_in`)."""
    problems = []
    for detail in error.errors(include_url=False):
        kind = detail["type"]
        path = dotted_path(detail["loc"])
        if kind == "extra_forbidden":
            path, message = _unknown_field(detail["loc"])
        elif kind.startswith("union_tag_"):
            message = _source_message(detail)
        else:
            message = plain_message(detail)
            value = detail.get("input")
            if isinstance(value, str) and len(value) > MAX_SHOWN_CHARS:
                # A rule that repeats the value (a name, a region) repeats it whole: cut it,
                # masking the secrets first (a cut could leave a part of one unmatched).
                message = message.replace(repr(value), shown_value(redact(value, secrets)))
        problems.append(ConfigProblem(path=redact(path, secrets), message=redact(message, secrets)))
    return problems


def secret_values_in(data: object) -> list[str]:
    """The string values of every secret field anywhere in parsed YAML ``data``.

    A YAML alias makes the same string appear elsewhere (as another field's value, or as a key):
    messages mask these strings wherever they appear. Each list or mapping is read once however
    many aliases name it, so a file of nested aliases costs the time of its text.
    """
    found: set[str] = set()
    # (value, inside a secret field's value): below a secret field, every string is a secret.
    pending: list[tuple[object, bool]] = [(data, False)]
    seen: set[tuple[int, bool]] = set()
    while pending:
        value, secret = pending.pop()
        if isinstance(value, Mapping | list):
            if (id(value), secret) in seen:
                continue
            seen.add((id(value), secret))
        if isinstance(value, Mapping):
            for key, item in value.items():
                if secret:
                    pending.append((key, True))
                pending.append((item, secret or key in SECRET_FIELDS))
        elif isinstance(value, list):
            pending.extend((item, secret) for item in value)
        elif secret and isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                text = str(value)
            except ValueError:  # an int of over 4,300 digits (from hex): no message shows it
                continue
            if len(text) >= 4:  # masking "1" everywhere would garble every message
                found.add(text)
    return sorted(found)
