"""The web config (``--web.config.file``): TLS and basic auth, proven over real TLS on loopback.

The certificates are generated here with ``cryptography`` (a self-signed CA, a server certificate
for 127.0.0.1 and client certificates), and a tiny test-only HTTPS server uses ``WebConfig`` the
way the exporter's server does: ``ssl_context()`` for the socket, ``check_basic_auth()`` per
request, ``BASIC_AUTH_CHALLENGE`` on a 401.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exporter.webconfig import (
    AUTH_CACHE_SIZE,
    BASIC_AUTH_CHALLENGE,
    WebConfig,
    WebConfigError,
    load_web_config,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_WEB_CONFIG = REPO / "examples" / "web-config.yml"
EXAMPLE_PASSWORD = "example-password-change-me"
PROMTOOL = shutil.which("promtool")

PASSWORD = "s3cret-scrape-password"
# Cost 4 keeps the tests fast; production hashes use 10 or more.
PASSWORD_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files in one directory: a CA, a server cert for 127.0.0.1, clients and oddities."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # signed by the CA
    client_key: Path
    rogue_cert: Path  # self-signed, unknown to the server
    rogue_key: Path
    encrypted_key: Path  # the server key, passphrase-protected
    other_key: Path  # a key that matches no certificate
    garbage: Path  # not PEM at all


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    ip: str | None = None,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_key(
    path: Path, key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None
) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key, rogue_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(5)
    )
    ca = ("test CA", ca_key)
    garbage = directory / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    return Pki(
        directory=directory,
        ca=_write_cert(directory / "ca.crt", _certificate("test CA", ca_key, None, ca=True)),
        server_cert=_write_cert(
            directory / "server.crt",
            _certificate(
                "127.0.0.1", server_key, ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, ip="127.0.0.1"
            ),
        ),
        server_key=_write_key(directory / "server.key", server_key),
        client_cert=_write_cert(
            directory / "client.crt",
            _certificate("prometheus", client_key, ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        ),
        client_key=_write_key(directory / "client.key", client_key),
        rogue_cert=_write_cert(
            directory / "rogue.crt",
            _certificate("rogue", rogue_key, None, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        ),
        rogue_key=_write_key(directory / "rogue.key", rogue_key),
        encrypted_key=_write_key(directory / "encrypted.key", server_key, b"passphrase"),
        other_key=_write_key(directory / "other.key", other_key),
        garbage=garbage,
    )


def _write_web_config(directory: Path, text: str, **paths: Path | str) -> Path:
    path = directory / "web-config.yml"
    path.write_text(text.format(**paths))
    return path


def _tls_config(pki: Pki, tmp_path: Path, extra: str = "", users: bool = True) -> WebConfig:
    text = "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n" + extra
    if users:
        text += "basic_auth_users:\n  prometheus: '{hash}'\n"
    return load_web_config(
        _write_web_config(
            tmp_path, text, cert=pki.server_cert, key=pki.server_key, hash=PASSWORD_HASH
        )
    )


# --- a tiny HTTPS server that uses WebConfig like the exporter's server -------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _WebConfigServer

    def do_GET(self) -> None:
        web_config = self.server.web_config
        authorized = not web_config.auth_required_for(self.path) or web_config.check_basic_auth(
            self.headers.get("Authorization")
        )
        body = b"ok\n" if authorized else b"Unauthorized\n"
        self.send_response(200 if authorized else 401)
        if not authorized:
            self.send_header("WWW-Authenticate", BASIC_AUTH_CHALLENGE)
        for name, value in web_config.response_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: test output stays readable."""


class _WebConfigServer(ThreadingHTTPServer):
    """HTTPS when the web config says so; the TLS handshake runs in the request's own thread."""

    daemon_threads = True

    def __init__(self, web_config: WebConfig) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.web_config = web_config
        self.ssl_context = web_config.ssl_context()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(5)
        try:
            tls_socket = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # plaintext client, no or bad client certificate: the connection is closed
        with tls_socket:
            super().finish_request(tls_socket, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{host!s}:{port}/metrics"


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[_WebConfigServer] = []

    def start(web_config: WebConfig) -> _WebConfigServer:
        server = _WebConfigServer(web_config)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _client(
    pki: Pki,
    cert: Path | None = None,
    key: Path | None = None,
    maximum_version: ssl.TLSVersion | None = None,
) -> httpx.Client:
    context = ssl.create_default_context(cafile=pki.ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    if maximum_version is not None:
        context.maximum_version = maximum_version
    return httpx.Client(verify=context, timeout=5)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- TLS and basic auth over the wire -----------------------------------------------------------


def test_tls_with_a_self_signed_certificate_serves_the_right_password(
    pki: Pki, tmp_path: Path, serve: Any
) -> None:
    server = serve(_tls_config(pki, tmp_path))
    with _client(pki) as client:
        response = client.get(server.url, auth=("prometheus", PASSWORD))
    assert response.status_code == 200
    assert response.text == "ok\n"


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(("prometheus", "wrong-password"), id="wrong-password"),
        pytest.param(("nobody", PASSWORD), id="unknown-user"),
        pytest.param(None, id="no-credentials"),
    ],
)
def test_bad_or_missing_credentials_get_401_with_a_challenge(
    pki: Pki, tmp_path: Path, serve: Any, auth: tuple[str, str] | None
) -> None:
    server = serve(_tls_config(pki, tmp_path))
    with _client(pki) as client:
        response = client.get(server.url, auth=auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_plaintext_http_to_the_tls_port_gets_no_answer(
    pki: Pki, tmp_path: Path, serve: Any
) -> None:
    server = serve(_tls_config(pki, tmp_path))
    with httpx.Client(timeout=5) as client, pytest.raises(httpx.TransportError):
        client.get(server.url.replace("https://", "http://"), auth=("prometheus", PASSWORD))


def test_a_client_that_does_not_trust_the_certificate_refuses_it(
    pki: Pki, tmp_path: Path, serve: Any
) -> None:
    server = serve(_tls_config(pki, tmp_path))
    with httpx.Client(timeout=5) as client, pytest.raises(httpx.ConnectError):
        client.get(server.url)


@pytest.mark.parametrize(
    ("client_cert", "accepted"),
    [
        pytest.param("none", False, id="no-client-certificate"),
        pytest.param("rogue", False, id="self-signed-client-certificate"),
        pytest.param("signed", True, id="certificate-signed-by-client-ca"),
    ],
)
def test_required_client_certificate_admits_only_clients_signed_by_the_client_ca(
    pki: Pki, tmp_path: Path, serve: Any, client_cert: str, accepted: bool
) -> None:
    extra = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n"
    server = serve(_tls_config(pki, tmp_path, extra, users=False))
    cert, key = {
        "none": (None, None),
        "rogue": (pki.rogue_cert, pki.rogue_key),
        "signed": (pki.client_cert, pki.client_key),
    }[client_cert]
    with _client(pki, cert, key) as client:
        if accepted:
            assert client.get(server.url).status_code == 200
        else:
            with pytest.raises(httpx.TransportError):
                client.get(server.url)


def test_verify_if_given_admits_a_client_without_a_certificate(
    pki: Pki, tmp_path: Path, serve: Any
) -> None:
    extra = f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki.ca}\n"
    server = serve(_tls_config(pki, tmp_path, extra, users=False))
    with _client(pki) as client:
        assert client.get(server.url).status_code == 200
    with _client(pki, pki.rogue_cert, pki.rogue_key) as client, pytest.raises(httpx.TransportError):
        client.get(server.url)


def test_min_version_tls13_refuses_a_tls12_client(pki: Pki, tmp_path: Path, serve: Any) -> None:
    server = serve(_tls_config(pki, tmp_path, "  min_version: TLS13\n", users=False))
    with _client(pki) as client:
        assert client.get(server.url).status_code == 200
    with (
        _client(pki, maximum_version=ssl.TLSVersion.TLSv1_2) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get(server.url)


def test_configured_headers_are_offered_to_the_server(pki: Pki, tmp_path: Path) -> None:
    path = _write_web_config(
        tmp_path,
        "http_server_config:\n  headers:\n    X-Frame-Options: DENY\n"
        "    Content-Security-Policy: ''\n",
    )
    assert load_web_config(path).response_headers == {"X-Frame-Options": "DENY"}


def test_basic_auth_without_tls_is_plain_http(tmp_path: Path, serve: Any) -> None:
    path = _write_web_config(
        tmp_path, "basic_auth_users:\n  prometheus: '{hash}'\n", hash=PASSWORD_HASH
    )
    server = serve(load_web_config(path))
    assert server.url.startswith("http://")
    with httpx.Client(timeout=5) as client:
        assert client.get(server.url, auth=("prometheus", PASSWORD)).status_code == 200
        assert client.get(server.url).status_code == 401


def test_auth_excluded_paths_are_served_without_credentials(
    pki: Pki, tmp_path: Path, serve: Any
) -> None:
    server = serve(_tls_config(pki, tmp_path, "auth_excluded_paths: [/-/healthy]\n"))
    base = server.url.removesuffix("/metrics")
    with _client(pki) as client:
        assert client.get(base + "/-/healthy").status_code == 200
        assert client.get(base + "/-/healthy?verbose=1").status_code == 200
        assert client.get(base + "/-/healthy/").status_code == 401, "exact paths only"
        assert client.get(base + "/metrics").status_code == 401


# --- check_basic_auth ---------------------------------------------------------------------------


def test_an_empty_web_config_means_plain_http_without_auth(tmp_path: Path) -> None:
    web_config = load_web_config(_write_web_config(tmp_path, ""))
    assert web_config.ssl_context() is None
    assert not web_config.requires_auth
    assert web_config.check_basic_auth(None)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("Bearer abc", id="other-scheme"),
        pytest.param("Basic", id="no-token"),
        pytest.param("Basic !!!not-base64!!!", id="not-base64"),
        pytest.param("Basic " + base64.b64encode(b"no-colon").decode(), id="no-colon"),
        pytest.param("Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(), id="binary"),
        pytest.param("Basic " + base64.b64encode(b"prometheus:" + b"x" * 200).decode(), id="long"),
        pytest.param("Basic ünïcödé", id="non-ascii-token"),
    ],
)
def test_malformed_authorization_headers_are_refused_not_raised(
    header: str, tmp_path: Path
) -> None:
    path = _write_web_config(
        tmp_path, "basic_auth_users:\n  prometheus: '{hash}'\n", hash=PASSWORD_HASH
    )
    web_config = load_web_config(path)
    assert web_config.requires_auth
    assert web_config.check_basic_auth(header) is False


def test_scheme_is_case_insensitive_and_htpasswd_2y_hashes_work(tmp_path: Path) -> None:
    htpasswd_style = "$2y$" + PASSWORD_HASH.removeprefix("$2b$")
    path = _write_web_config(
        tmp_path, "basic_auth_users:\n  prometheus: '{hash}'\n", hash=htpasswd_style
    )
    web_config = load_web_config(path)
    assert web_config.check_basic_auth(_basic("prometheus", PASSWORD).replace("Basic", "basic"))


def test_successes_are_cached_and_the_cache_is_bounded(tmp_path: Path) -> None:
    path = _write_web_config(
        tmp_path, "basic_auth_users:\n  prometheus: '{hash}'\n", hash=PASSWORD_HASH
    )
    web_config = load_web_config(path)
    good = _basic("prometheus", PASSWORD)
    assert not web_config.check_basic_auth(_basic("prometheus", "wrong"))
    assert web_config.cached_authorizations == 0, "failures are never cached"
    assert web_config.check_basic_auth(good)
    assert web_config.check_basic_auth(good)
    assert web_config.cached_authorizations == 1
    # Distinct but valid headers (trailing spaces) each take a cache slot; the cache stays bounded.
    for extra_spaces in range(AUTH_CACHE_SIZE + 20):
        assert web_config.check_basic_auth(good + " " * extra_spaces)
    assert web_config.cached_authorizations == AUTH_CACHE_SIZE


def _seconds(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def test_a_cached_success_skips_bcrypt_and_unknown_users_cost_as_much_as_known_ones(
    tmp_path: Path,
) -> None:
    # Cost 10 (about 50 ms a check) makes the differences far larger than scheduling noise.
    slow_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    path = _write_web_config(
        tmp_path, "basic_auth_users:\n  prometheus: '{hash}'\n", hash=slow_hash
    )
    web_config = load_web_config(path)
    good = _basic("prometheus", PASSWORD)

    first = _seconds(lambda: web_config.check_basic_auth(good))
    cached = min(_seconds(lambda: web_config.check_basic_auth(good)) for _ in range(3))
    assert cached < first / 10

    known_user = min(
        _seconds(lambda: web_config.check_basic_auth(_basic("prometheus", "wrong")))
        for _ in range(2)
    )
    unknown_user = min(
        _seconds(lambda: web_config.check_basic_auth(_basic("mallory", "wrong"))) for _ in range(2)
    )
    assert unknown_user > known_user / 3


def test_loading_computes_no_hash_and_an_unknown_user_costs_the_costliest_configured_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    costly_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6)).decode()

    def no_hashing(*args: object) -> bytes:
        raise AssertionError("a hash was computed while loading the web config")

    monkeypatch.setattr(bcrypt, "hashpw", no_hashing)
    monkeypatch.setattr(bcrypt, "gensalt", no_hashing)
    path = _write_web_config(
        tmp_path,
        "basic_auth_users:\n  cheap: '{hash}'\n  costly: '{costly}'\n",
        hash=PASSWORD_HASH,
        costly=costly_hash,
    )
    web_config = load_web_config(path)
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def recording_checkpw(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording_checkpw)
    # The costly user's own password, sent for an unknown user, still fails.
    assert not web_config.check_basic_auth(_basic("mallory", PASSWORD))
    assert checked == [costly_hash.encode()]


def test_bcrypt_checks_run_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    web_config = load_web_config(
        _write_web_config(
            tmp_path, "basic_auth_users:\n  prometheus: '{hash}'\n", hash=PASSWORD_HASH
        )
    )
    lock = threading.Lock()
    running = [0]
    most = [0]
    widen_the_window = threading.Event()  # never set: wait() only yields for a moment

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        widen_the_window.wait(0.005)
        with lock:
            running[0] -= 1
        return False

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    threads = [
        threading.Thread(
            target=web_config.check_basic_auth, args=(_basic("prometheus", f"wrong-{n}"),)
        )
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == 1


# --- the example and promtool -------------------------------------------------------------------


def _example_beside_certificates(pki: Pki, tmp_path: Path) -> Path:
    """The example, copied byte for byte next to a tls.crt/tls.key pair it refers to."""
    shutil.copy(pki.server_cert, tmp_path / "tls.crt")
    shutil.copy(pki.server_key, tmp_path / "tls.key")
    return Path(shutil.copy(EXAMPLE_WEB_CONFIG, tmp_path / "web-config.yml"))


def test_the_example_web_config_loads_and_accepts_its_documented_password(
    pki: Pki, tmp_path: Path
) -> None:
    web_config = load_web_config(_example_beside_certificates(pki, tmp_path))
    assert web_config.ssl_context() is not None
    assert web_config.requires_auth
    assert web_config.check_basic_auth(_basic("prometheus", EXAMPLE_PASSWORD))
    assert web_config.response_headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make system-deps)")
def test_promtool_accepts_the_example_web_config(pki: Pki, tmp_path: Path) -> None:
    example = _example_beside_certificates(pki, tmp_path)
    result = subprocess.run(
        [str(PROMTOOL), "check", "web-config", example.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- bad web configs: each gives a clear error naming the file and the field --------------------

_TLS = "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"

BAD_WEB_CONFIGS = [
    pytest.param("tls_server_config: [", "invalid YAML: line 1", True, id="not-yaml"),
    pytest.param("- a\n- b\n", "must be a YAML mapping", True, id="not-a-mapping"),
    pytest.param(
        "basic_auth_users: {{a: '{hash}'}}\nbasic_auth_users: {{b: '{hash}'}}\n",
        "invalid YAML: line 2, column 1: duplicate key (first given on line 1)",
        True,
        id="duplicate-key",
    ),
    pytest.param("tls_config: {{}}\n", "tls_config: unknown or unsupported field", True, id="typo"),
    pytest.param(
        _TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        "tls_server_config.cipher_suites: unknown or unsupported field (allowed: cert_file",
        False,
        id="unsupported-cipher-suites",
    ),
    pytest.param(
        _TLS + "  client_auth_type: RequireCert\n",
        "tls_server_config.client_auth_type: must be one of 'NoClientCert', 'RequestClientCert',",
        True,
        id="bad-client-auth-type",
    ),
    pytest.param(
        _TLS + "  min_version: TLS10\n",
        "tls_server_config.min_version: must be one of 'TLS12' or 'TLS13'",
        False,
        id="tls10",
    ),
    pytest.param(
        _TLS + "  min_version: TLS13\n  max_version: TLS12\n",
        "tls_server_config.min_version: TLS13 is above max_version TLS12",
        False,
        id="min-above-max",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: {cert}\n",
        "tls_server_config.key_file: missing",
        True,
        id="cert-without-key",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: {cert}\n  key_file: ''\n",
        "tls_server_config.key_file: missing",
        True,
        id="empty-key-file",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: 5\n  key_file: {key}\n",
        "tls_server_config.cert_file: must be a file path",
        True,
        id="number-as-path",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: does-not-exist.crt\n  key_file: {key}\n",
        "tls_server_config.cert_file: file not found: ",
        True,
        id="cert-file-not-found",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: {pki_dir}\n  key_file: {key}\n",
        "tls_server_config.cert_file: not a file",
        True,
        id="cert-file-is-a-directory",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: {garbage}\n  key_file: {key}\n",
        "tls_server_config.cert_file: not a PEM certificate",
        True,
        id="cert-not-pem",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {garbage}\n",
        "tls_server_config.key_file: not a PEM private key",
        True,
        id="key-not-pem",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {other_key}\n",
        "tls_server_config.key_file: does not match the certificate in cert_file",
        True,
        id="key-does-not-match",
    ),
    pytest.param(
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {encrypted_key}\n",
        "tls_server_config.key_file: the private key is encrypted",
        True,
        id="encrypted-key",
    ),
    pytest.param(
        _TLS + "  client_ca_file: {ca}\n",
        "tls_server_config.client_ca_file: set without a client_auth_type",
        True,
        id="client-ca-without-auth-type",
    ),
    pytest.param(
        _TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.client_ca_file: missing: client_auth_type RequireAndVerifyClientCert",
        False,
        id="verify-without-client-ca",
    ),
    pytest.param(
        _TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {garbage}\n",
        "tls_server_config.client_ca_file: not a PEM CA certificate",
        False,
        id="client-ca-not-pem",
    ),
    pytest.param(
        "basic_auth_users:\n  alice: hunter2-plaintext\n",
        "basic_auth_users.alice: not a bcrypt hash",
        True,
        id="plaintext-password",
    ),
    pytest.param(
        "basic_auth_users:\n  'a:b': '{hash}'\n",
        "basic_auth_users.<key>: a user name can not contain ':'",
        False,
        id="colon-in-user-name",
    ),
    pytest.param(
        "auth_excluded_paths: [healthy]\n",
        "auth_excluded_paths.0: a path starts with '/'",
        False,
        id="relative-excluded-path",
    ),
    pytest.param(
        "http_server_config:\n  headers:\n    X-Powered-By: me\n",
        "http_server_config.headers.X-Powered-By: this header can not be configured",
        True,
        id="header-not-allowed",
    ),
    pytest.param(
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        "http_server_config.headers.X-Content-Type-Options: accepted values: nosniff",
        True,
        id="header-bad-value",
    ),
    pytest.param(
        "basic_auth_users:\n  alice: '{costly_hash}'\n",
        "basic_auth_users.alice: bcrypt cost 31 is above 14, the most this exporter accepts",
        False,
        id="bcrypt-cost-31",
    ),
    pytest.param(
        "basic_auth_users:\n  alice: '$2b$15$" + "a" * 53 + "'\n",
        "basic_auth_users.alice: bcrypt cost 15 is above 14",
        False,
        id="bcrypt-cost-15",
    ),
    pytest.param(
        "basic_auth_users:\n  alice:hunter2secret:\n",
        "basic_auth_users.<key>: must be a text value",
        False,
        id="password-written-as-a-key",
    ),
    pytest.param(
        "basic_auth_users: {{alice: '{hash}'}}\nXk29dkKdA8sLqP0zT3vN7mB1cR5wYq:\n",
        "<unknown key>: unknown or unsupported field (allowed: tls_server_config",
        True,
        id="password-pasted-as-a-key",
    ),
    pytest.param(
        "http_server_config:\n  http2: perhaps\n",
        "http_server_config.http2: must be true or false",
        True,
        id="not-a-boolean",
    ),
    pytest.param(
        "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 10))
        + "basic_auth_users: *l9\n",
        "invalid YAML: line 7, column 5: the document expands to more than 2000000 values "
        "through its aliases",
        True,
        id="alias-bomb",
    ),
    pytest.param(
        "http_server_config:\n  http2: !!int '0x'\n",
        "invalid YAML: line 2, column 10: cannot read this value as a whole number",
        True,
        id="number-that-cannot-be-read",
    ),
]


@pytest.mark.parametrize(("text", "expected", "promtool_rejects_too"), BAD_WEB_CONFIGS)
def test_bad_web_configs_give_a_clear_error(
    pki: Pki, tmp_path: Path, text: str, expected: str, promtool_rejects_too: bool
) -> None:
    path = _write_web_config(
        tmp_path,
        text,
        cert=pki.server_cert,
        key=pki.server_key,
        ca=pki.ca,
        garbage=pki.garbage,
        other_key=pki.other_key,
        encrypted_key=pki.encrypted_key,
        pki_dir=pki.directory,
        hash=PASSWORD_HASH,
        costly_hash="$2b$31$" + "a" * 53,
    )
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert message.startswith(f"web config {path}: ")
    assert expected in message
    assert "hunter2" not in message, "a secret must never appear in an error"
    assert "Xk29dkKdA8sLqP0zT3vN7mB1cR5wYq" not in message
    assert "Input should" not in message, "pydantic's wording must not reach a user"
    assert "Traceback" not in message
    if promtool_rejects_too and PROMTOOL is not None:
        # The Go exporter-toolkit refuses the same file: our format is the shared one.
        result = subprocess.run(
            [PROMTOOL, "check", "web-config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode != 0, result.stdout


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("missing.yml", "No such file or directory", id="missing"),
        pytest.param(".", "is a directory", id="directory"),
    ],
)
def test_an_unreadable_web_config_file_is_a_clear_error(
    tmp_path: Path, name: str, expected: str
) -> None:
    with pytest.raises(WebConfigError, match=expected):
        load_web_config(tmp_path / name)


def test_a_certificate_deleted_after_start_up_is_a_clear_error_on_reload(
    pki: Pki, tmp_path: Path
) -> None:
    shutil.copy(pki.server_cert, tmp_path / "tls.crt")
    shutil.copy(pki.server_key, tmp_path / "tls.key")
    path = _write_web_config(
        tmp_path, "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
    )
    web_config = load_web_config(path)
    assert web_config.ssl_context() is not None
    (tmp_path / "tls.crt").unlink()
    with pytest.raises(
        WebConfigError, match=r"tls_server_config\.cert_file: cannot read .*tls\.crt"
    ):
        web_config.ssl_context()


def test_repr_never_shows_password_hashes(tmp_path: Path) -> None:
    path = _write_web_config(
        tmp_path, "basic_auth_users:\n  prometheus: '{hash}'\n", hash=PASSWORD_HASH
    )
    assert PASSWORD_HASH not in repr(load_web_config(path))
