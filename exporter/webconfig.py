"""The ``--web.config.file``: TLS and basic auth in the format Prometheus exporters share.

The file format is the one of prometheus/exporter-toolkit (docs/web-configuration.md), so a web
config written for node_exporter works here, and ``promtool check web-config`` checks ours::

    tls_server_config:
      cert_file: tls.crt                 # relative paths are relative to this file's directory
      key_file: tls.key
      client_ca_file: ca.crt             # needed by every client_auth_type except NoClientCert
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12                 # TLS12 (default) or TLS13
      max_version: TLS13
    http_server_config:
      headers:
        X-Content-Type-Options: nosniff
    basic_auth_users:
      prometheus: $2b$10$...             # bcrypt hash, e.g. htpasswd -nBC 10 "" | tr -d ':\\n'
    auth_excluded_paths: [/-/healthy, /-/ready]   # served without basic auth (Kubernetes probes)

Differences from the Go toolkit, each rejected or documented rather than silently ignored:

- Python's ``ssl`` module verifies every client certificate it receives against ``client_ca_file``
  and cannot accept an unverified one, so ``RequestClientCert`` behaves like
  ``VerifyClientCertIfGiven`` and ``RequireAnyClientCert`` like ``RequireAndVerifyClientCert``;
  all four client-certificate modes therefore need ``client_ca_file``.
- TLS 1.0 and 1.1 are refused; ``cipher_suites``, ``curve_preferences``, inline ``cert``/``key``,
  ``client_allowed_sans`` and ``rate_limit`` are not supported and are reported as unknown fields.
- ``auth_excluded_paths`` (newer toolkits; promtool 2.42 does not know it yet) is supported.
- ``http_server_config.http2`` is accepted for compatibility and has no effect (HTTP/1.1 only).

``load_web_config`` checks everything at start-up: the YAML shape (unknown fields are errors), the
bcrypt hashes, and that the certificate, key and client CA files exist and load together. Every
error is a ``WebConfigError`` whose message names the file and the field and never contains a
password hash or key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exporter.files import load_yaml_file
from exporter.validation import did_you_mean, plain_message, shown_key

__all__ = [
    "BASIC_AUTH_CHALLENGE",
    "HttpServerConfig",
    "TlsServerConfig",
    "WebConfig",
    "WebConfigError",
    "load_web_config",
]

BASIC_AUTH_CHALLENGE: Final = 'Basic realm="aliyun-cloudassistant-exporter", charset="UTF-8"'
"""The ``WWW-Authenticate`` value to send with a 401 when ``check_basic_auth`` refuses a request."""

AUTH_CACHE_SIZE: Final = 100
"""How many successful ``Authorization`` headers are remembered, so a scrape costs no bcrypt."""

BCRYPT_MAX_COST: Final = 14
"""The highest bcrypt cost accepted. Each check costs 2**cost rounds of CPU (cost 14: about a
second, and every wrong password or unknown user pays it; cost 31 would take days): a hash above
this would let any client stall the exporter, so the config is refused instead."""

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TlsVersionName = Literal["TLS12", "TLS13"]

_TLS_VERSIONS: Final[dict[str, ssl.TLSVersion]] = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Python's ssl cannot request a client certificate without verifying it (see module docstring).
_VERIFY_MODES: Final[dict[str, ssl.VerifyMode]] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# The headers the exporter-toolkit lets a web config set, with the values it accepts (None: any).
_ALLOWED_HEADERS: Final[dict[str, frozenset[str] | None]] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
_BCRYPT_HASH = re.compile(r"^\$2[abxy]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}$")
_BCRYPT_MAX_PASSWORD_BYTES: Final = 72
_NAME: Final = re.compile(r"[A-Za-z0-9][\w.@+-]{0,63}")
# bcrypt is CPU bound and holds a core for its whole run: checks run one at a time (as the
# exporter-toolkit does), so a burst of bad passwords cannot take every core from the scrapes.
_BCRYPT_LOCK: Final = threading.Lock()


class WebConfigError(Exception):
    """The web config file is missing, unreadable or invalid; the message names file and field."""


def _field_error(field: str, problem: str) -> PydanticCustomError:
    """A validation error about ``field`` of the model being validated (added to its location)."""
    return PydanticCustomError("web_config", "{problem}", {"field": field, "problem": problem})


def _resolve_file(value: Path | None, info: ValidationInfo) -> Path | None:
    """Resolve a path relative to the web config file's directory and check it is a file."""
    if value is None:
        return None
    base_dir = info.context.get("base_dir") if isinstance(info.context, dict) else None
    path = value.expanduser()
    if not path.is_absolute() and isinstance(base_dir, Path):
        path = base_dir / path
    if not path.exists():
        raise PydanticCustomError("web_config", "file not found: {path}", {"path": str(path)})
    if not path.is_file():
        raise PydanticCustomError("web_config", "not a file: {path}", {"path": str(path)})
    if not os.access(path, os.R_OK):
        raise PydanticCustomError("web_config", "file not readable: {path}", {"path": str(path)})
    return path


def _refuse_key_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for the passphrase and hang.
    raise _KeyIsEncryptedError


class _KeyIsEncryptedError(Exception):
    """OpenSSL asked for a passphrase: the private key is encrypted."""


class TlsServerConfig(BaseModel):
    """``tls_server_config``: TLS is on when any of the certificate or client fields is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    client_auth_type: ClientAuthType = "NoClientCert"
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName = "TLS13"

    @field_validator("cert_file", "key_file", "client_ca_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # The toolkit treats an empty path as not given.
        return None if value == "" else value

    @field_validator("cert_file", "key_file", "client_ca_file", mode="after")
    @classmethod
    def _file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve_file(value, info)

    @property
    def enabled(self) -> bool:
        """True when the exporter must serve HTTPS (the toolkit's rule: any cert/client field)."""
        return (
            self.cert_file is not None
            or self.key_file is not None
            or self.client_ca_file is not None
            or "client_auth_type" in self.model_fields_set
        )

    @model_validator(mode="after")
    def _consistent_and_loadable(self) -> TlsServerConfig:
        if not self.enabled:
            return self
        if self.cert_file is None:
            raise _field_error("cert_file", "missing: TLS needs cert_file and key_file")
        if self.key_file is None:
            raise _field_error("key_file", "missing: TLS needs cert_file and key_file")
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise _field_error(
                "min_version", f"{self.min_version} is above max_version {self.max_version}"
            )
        if self.client_auth_type == "NoClientCert" and self.client_ca_file is not None:
            raise _field_error(
                "client_ca_file",
                "set without a client_auth_type that asks for client certificates "
                "(use RequireAndVerifyClientCert)",
            )
        if self.client_auth_type != "NoClientCert" and self.client_ca_file is None:
            raise _field_error(
                "client_ca_file",
                f"missing: client_auth_type {self.client_auth_type} needs the CA that signs "
                "client certificates (every certificate a client sends is verified)",
            )
        self.build_ssl_context()
        return self

    def build_ssl_context(self) -> ssl.SSLContext:
        """A fresh server-side context from the files as they are now (call again to reload).

        Raises ``PydanticCustomError`` naming the field whose file does not load.
        """
        if self.cert_file is None or self.key_file is None:
            raise _field_error("cert_file", "missing: TLS needs cert_file and key_file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[self.min_version]
        context.maximum_version = _TLS_VERSIONS[self.max_version]
        try:
            # Loading the certificate alone first tells a bad certificate from a bad key.
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=self.cert_file)
        except ssl.SSLError as exc:
            raise _field_error("cert_file", f"not a PEM certificate{_ssl_reason(exc)}") from None
        except OSError as exc:
            raise _field_error("cert_file", _unreadable(self.cert_file, exc)) from None
        try:
            context.load_cert_chain(self.cert_file, self.key_file, password=_refuse_key_password)
        except _KeyIsEncryptedError:
            raise _field_error(
                "key_file", "the private key is encrypted; give an unencrypted PEM key"
            ) from None
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise _field_error(
                    "key_file", "does not match the certificate in cert_file"
                ) from None
            raise _field_error("key_file", f"not a PEM private key{_ssl_reason(exc)}") from None
        except OSError as exc:
            raise _field_error("key_file", _unreadable(self.key_file, exc)) from None
        if self.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca_file)
            except ssl.SSLError as exc:
                raise _field_error(
                    "client_ca_file", f"not a PEM CA certificate{_ssl_reason(exc)}"
                ) from None
            except OSError as exc:
                raise _field_error(
                    "client_ca_file", _unreadable(self.client_ca_file, exc)
                ) from None
        context.verify_mode = _VERIFY_MODES[self.client_auth_type]
        return context


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason, e.g. `` (no certificate or crl found)``, or nothing when it gives none."""
    if isinstance(exc.reason, str) and exc.reason:
        return f" ({exc.reason.replace('_', ' ').lower()})"
    return ""


def _unreadable(path: Path, exc: OSError) -> str:
    return f"cannot read {path}: {exc.strerror or type(exc).__name__}"


class HttpServerConfig(BaseModel):
    """``http_server_config``: extra response headers; ``http2`` is accepted and has no effect."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    http2: bool = True
    headers: dict[str, str] = {}

    @field_validator("headers", mode="after")
    @classmethod
    def _allowed_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name not in _ALLOWED_HEADERS:
                raise _field_error(
                    name,
                    f"this header can not be configured (allowed: {', '.join(_ALLOWED_HEADERS)})",
                )
            accepted = _ALLOWED_HEADERS[name]
            if value and accepted is not None and value.lower() not in accepted:
                raise _field_error(name, f"accepted values: {', '.join(sorted(accepted))}")
        return {name: value for name, value in headers.items() if value}


class WebConfig(BaseModel):
    """The whole web config; the HTTP server asks it for TLS, auth and headers.

    ``check_basic_auth`` is thread-safe. A ``WebConfig`` is immutable: to reload, load the file
    again and swap the object.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tls_server_config: TlsServerConfig = TlsServerConfig()
    http_server_config: HttpServerConfig = HttpServerConfig()
    basic_auth_users: dict[str, SecretStr] = {}
    auth_excluded_paths: tuple[str, ...] = ()
    """Paths served without basic auth (exact match, as in the toolkit), e.g. the probes'."""

    _password_hashes: dict[bytes, bytes] = PrivateAttr(default_factory=dict)
    _costliest_hash: bytes = PrivateAttr(default=b"")
    _cache_secret: bytes = PrivateAttr(default_factory=lambda: os.urandom(32))
    _auth_cache: OrderedDict[bytes, None] = PrivateAttr(default_factory=OrderedDict)
    _auth_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    _source: str = PrivateAttr(default="")

    @field_validator("tls_server_config", "http_server_config", "basic_auth_users", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        # "tls_server_config:" with nothing under it is an empty section, as in the toolkit.
        return {} if value is None else value

    @field_validator("auth_excluded_paths", mode="after")
    @classmethod
    def _absolute_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for index, path in enumerate(paths):
            if not path.startswith("/"):
                raise _field_error(str(index), "a path starts with '/', e.g. /-/healthy")
        return paths

    @field_validator("basic_auth_users", mode="after")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for user, password_hash in users.items():
            if ":" in user:
                raise _field_error(
                    user, "a user name can not contain ':' (basic auth splits on it)"
                )
            match = _BCRYPT_HASH.match(password_hash.get_secret_value())
            if match is None or not 4 <= int(match["cost"]) <= 31:
                raise _field_error(
                    user,
                    "not a bcrypt hash (the value must be the hash, never the password; "
                    "make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')",
                )
            if int(match["cost"]) > BCRYPT_MAX_COST:
                raise _field_error(
                    user,
                    f"bcrypt cost {int(match['cost'])} is above {BCRYPT_MAX_COST}, the most this "
                    "exporter accepts (every login would take minutes of CPU); make the hash "
                    "with a cost of 10 to 12: htpasswd -nBC 10 \"\" | tr -d ':\\n'",
                )
        return users

    def model_post_init(self, context: Any, /) -> None:
        self._password_hashes = {
            user.encode("utf-8"): password_hash.get_secret_value().encode("ascii")
            for user, password_hash in self.basic_auth_users.items()
        }
        if self._password_hashes:
            # An unknown user's password is checked against the configured hash of the highest
            # cost (and refused whatever the result), so the answer takes as long as for a known
            # user and does not reveal who exists. No hash is computed at load.
            self._costliest_hash = max(
                self._password_hashes.values(), key=lambda hashed: int(hashed[4:6])
            )

    @property
    def requires_auth(self) -> bool:
        """True when requests must carry basic auth credentials of a configured user."""
        return bool(self.basic_auth_users)

    def auth_required_for(self, path: str) -> bool:
        """True when a request for ``path`` (query string ignored) must pass basic auth."""
        return self.requires_auth and path.split("?", 1)[0] not in self.auth_excluded_paths

    @property
    def response_headers(self) -> dict[str, str]:
        """Headers to add to every HTTP response (from ``http_server_config.headers``)."""
        return dict(self.http_server_config.headers)

    @property
    def cached_authorizations(self) -> int:
        """How many verified ``Authorization`` headers are cached (at most ``AUTH_CACHE_SIZE``)."""
        with self._auth_lock:
            return len(self._auth_cache)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A server-side ``SSLContext`` loaded from the files now, or None when TLS is off.

        Client certificates are requested and verified as ``client_auth_type`` says. Raises
        ``WebConfigError`` if a file stopped loading since the config was validated.
        """
        if not self.tls_server_config.enabled:
            return None
        try:
            return self.tls_server_config.build_ssl_context()
        except PydanticCustomError as exc:
            field = (exc.context or {}).get("field", "")
            source = f"web config {self._source}" if self._source else "web config"
            raise WebConfigError(f"{source}: tls_server_config.{field}: {exc.message()}") from None

    def check_basic_auth(self, authorization_header: str | None) -> bool:
        """True when the request may proceed: no users configured, or valid credentials.

        Malformed headers are refused, never raised. Passwords are compared with bcrypt; an
        unknown user costs the same bcrypt as a known one. A successful header is cached
        (keyed by an HMAC of it, bounded LRU) so repeated scrapes do not each pay for bcrypt;
        failures are never cached.
        """
        if not self._password_hashes:
            return True
        if not authorization_header:
            return False
        cache_key = hmac.digest(
            self._cache_secret,
            authorization_header.encode("utf-8", "surrogatepass"),
            hashlib.sha256,
        )
        with self._auth_lock:
            if cache_key in self._auth_cache:
                self._auth_cache.move_to_end(cache_key)
                return True
        credentials = _parse_basic_credentials(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        stored_hash = self._password_hashes.get(user)
        if stored_hash is None:
            _bcrypt_matches(password, self._costliest_hash)
            return False
        if not _bcrypt_matches(password, stored_hash):
            return False
        with self._auth_lock:
            self._auth_cache[cache_key] = None
            while len(self._auth_cache) > AUTH_CACHE_SIZE:
                self._auth_cache.popitem(last=False)
        return True


def _parse_basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    """(user, password) from ``Basic base64(user:password)``, or None when malformed."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password


def _bcrypt_matches(password: bytes, password_hash: bytes) -> bool:
    import bcrypt  # only with basic auth users: a TLS-only config does without it

    with _BCRYPT_LOCK:
        if len(password) > _BCRYPT_MAX_PASSWORD_BYTES:
            # bcrypt only ever uses 72 bytes and the library refuses more: spend the same time,
            # refuse.
            bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD_BYTES], password_hash)
            return False
        return bcrypt.checkpw(password, password_hash)


# exporter-toolkit fields this exporter refuses (see the module docstring): named when given.
_UNSUPPORTED: Final = frozenset(
    {"cipher_suites", "curve_preferences", "cert", "key", "client_allowed_sans", "rate_limit"}
)
_SECTION_FIELDS: Final[dict[tuple[str, ...], tuple[str, ...]]] = {
    (): tuple(WebConfig.model_fields),
    ("tls_server_config",): tuple(TlsServerConfig.model_fields),
    ("http_server_config",): tuple(HttpServerConfig.model_fields),
}


def _describe(error: Any) -> str:
    """One ``location: problem`` line for a pydantic error, without the offending value.

    A key that may be a value written in the wrong place (a password hash, key material) is not
    repeated (:func:`exporter.validation.shown_key`).
    """
    loc = tuple(str(part) for part in error["loc"])
    ctx = error.get("ctx") or {}
    if "field" in ctx:
        loc = (*loc, str(ctx["field"]))
    where = ".".join(_shown(part) for part in loc) if loc else "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _SECTION_FIELDS.get(loc[:-1], ())
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        known = {name for names in _SECTION_FIELDS.values() for name in names} | _UNSUPPORTED
        close = did_you_mean(loc[-1], allowed or known, cutoff=0.6)
        if close is not None and loc[-1] not in _UNSUPPORTED:
            hint = f", did you mean {close!r}?{hint}"
        elif loc[-1] not in known:
            # Not a field name nor close to one: maybe a value in the wrong place (a password).
            where = ".".join((*(_shown(part) for part in loc[:-1]), "<unknown key>"))
        return f"{where}: unknown or unsupported field{hint}"
    return f"{where}: {plain_message(error)}"


def _shown(part: str) -> str:
    # User names and header names are keys a user chose: shown when they look like names (a
    # bcrypt hash or a password written as a key does not).
    return part if shown_key(part) or _NAME.fullmatch(part) else "<key>"


def load_web_config(path: Path) -> WebConfig:
    """Read and validate a web config file; raise ``WebConfigError`` naming file and field.

    An empty file is valid and means plain HTTP without authentication.
    """
    try:
        data = load_yaml_file(path)
    except ValueError as exc:
        raise WebConfigError(f"web config {path}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(
            f"web config {path}: must be a YAML mapping with tls_server_config, "
            "http_server_config and/or basic_auth_users"
        )
    try:
        config = WebConfig.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors(include_input=False))
        raise WebConfigError(f"web config {path}: {problems}") from None
    except RecursionError:  # a guard: exporter.files already refuses recursive aliases
        raise WebConfigError(f"web config {path}: the structure is nested too deeply") from None
    config._source = str(path)
    return config
