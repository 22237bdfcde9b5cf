"""What every credentials provider shares: credentials, the protocol, caching temporary ones.

:class:`RefreshingProvider` caches temporary credentials and fetches new ones before they expire:
``min(15 minutes, a third of their lifetime)`` early (the SDK refreshes 15 minutes early; a third
keeps short-lived test credentials usable), one refresh at a time. The providers themselves are
in :mod:`exporter.ecs.credentials`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import SecretStr

from exporter.ecs.errors import CredentialsError

log = logging.getLogger("exporter.ecs.credentials")

_MAX_EARLY_REFRESH = timedelta(minutes=15)
_RETRY_AFTER_FAILED_REFRESH = timedelta(seconds=30)


@dataclass(frozen=True)
class Credentials:
    """An AccessKey pair, with the STS token and expiry of temporary credentials."""

    access_key_id: str
    access_key_secret: SecretStr
    security_token: SecretStr | None = None
    expiration: datetime | None = None  # aware UTC; None for long-term keys
    provider: str = "static"  # static | environment | oidc_role | ecs_ram_role | assume_role

    def secret_values(self) -> tuple[str, ...]:
        """The secret and the token (when there is one), for redaction and scrubbing."""
        token = self.security_token
        secret = self.access_key_secret.get_secret_value()
        return (secret, token.get_secret_value()) if token is not None else (secret,)


class CredentialsProvider(Protocol):
    """Something that hands out credentials."""

    def get_credentials(self) -> Credentials:
        """Return valid credentials (cached, refreshed before expiry; thread-safe)."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _refresh_time(now: datetime, expiration: datetime) -> datetime:
    lifetime = expiration - now
    return expiration - min(_MAX_EARLY_REFRESH, lifetime / 3)


class RefreshingProvider:
    """Caches temporary credentials and fetches new ones before they expire (one at a time).

    If a refresh fails while the cached credentials are still valid, those are kept (and the
    refresh retried at most every 30 s) so a short STS or metadata outage does not fail scrapes.
    """

    name = "temporary"

    def __init__(self, now: Callable[[], datetime] | None) -> None:
        self._now = now or _utc_now
        self._lock = threading.Lock()
        self._cached: Credentials | None = None
        self._refresh_at: datetime | None = None

    def get_credentials(self) -> Credentials:
        """Return cached credentials, fetching new ones when due."""
        with self._lock:
            now = self._now()
            cached = self._cached
            if cached is not None and (self._refresh_at is None or now < self._refresh_at):
                return cached
            try:
                fresh = self._fetch()
            except CredentialsError as exc:
                expiration = cached.expiration if cached is not None else None
                if cached is None or expiration is None or now >= expiration:
                    raise
                log.warning(
                    "refreshing %s credentials failed, using the current ones until %s: %s",
                    self.name,
                    expiration.isoformat(),
                    exc,
                )
                self._refresh_at = min(expiration, now + _RETRY_AFTER_FAILED_REFRESH)
                return cached
            expiration = fresh.expiration
            if expiration is None:
                self._refresh_at = None
            elif expiration <= now:
                raise CredentialsError(
                    f"{self.name} credentials expired at {expiration.isoformat()} on arrival; "
                    "is the clock right?"
                )
            else:
                self._refresh_at = _refresh_time(now, expiration)
            self._cached = fresh
            log.info(
                "fetched %s credentials for AccessKey %s, valid until %s",
                self.name,
                fresh.access_key_id,
                expiration.isoformat() if expiration else "revoked",
            )
            return fresh

    def _fetch(self) -> Credentials:
        raise NotImplementedError


def _parse_expiration(value: object, source: str) -> datetime:
    if not isinstance(value, str):
        raise CredentialsError(f"{source}: the answer has no Expiration")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CredentialsError(f"{source}: Expiration {value[:40]!r} is not a time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def temporary_credentials(data: object, source: str, provider: str) -> Credentials:
    """Build credentials from ``{AccessKeyId, AccessKeySecret, SecurityToken, Expiration}``."""
    if not isinstance(data, dict):
        raise CredentialsError(f"{source}: the answer has no credentials object")
    key_id = data.get("AccessKeyId")
    secret = data.get("AccessKeySecret")
    token = data.get("SecurityToken")
    if not (isinstance(key_id, str) and key_id and isinstance(secret, str) and secret):
        raise CredentialsError(f"{source}: the answer lacks AccessKeyId or AccessKeySecret")
    if not isinstance(token, str) or not token:
        raise CredentialsError(f"{source}: the answer lacks SecurityToken")
    expiration = _parse_expiration(data.get("Expiration"), source)
    return Credentials(key_id, SecretStr(secret), SecretStr(token), expiration, provider)
