"""Service identities over mutual TLS.

`make_certs(dir)` writes a private CA (`ca.pem`, `ca.key`) and one
certificate + key per service (`<name>.pem`, `<name>.key`) whose CN is the
service name and whose SANs cover its compose/Kubernetes DNS names, localhost
and 127.0.0.1. A service with `ALPHASWARM_TLS_CA/CERT/KEY` set serves TLS and
requires a client certificate signed by that CA; its clients present their
own certificate. A peer whose certificate names a known service is role
`service` (alphaswarm_common.auth).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from alphaswarm_common.auth import ClientCredentials
from alphaswarm_common.errors import InvalidArgument

__all__ = ["client_credentials", "make_certs", "make_secrets", "server_credentials"]

SERVICES: tuple[str, ...] = ("trainer", "registry", "backtester", "persistence", "gateway")


def _dns_names(service: str, namespace: str | None) -> list[str]:
    names = [service, f"alphaswarm-{service}", "localhost"]
    for ns in [namespace] if namespace else []:
        names += [f"{service}.{ns}", f"{service}.{ns}.svc", f"{service}.{ns}.svc.cluster.local"]
    return names


def make_certs(
    directory: Path,
    *,
    services: Iterable[str] = SERVICES,
    namespace: str | None = "alphaswarm",
    days: int = 825,
    extra_names: Iterable[str] = (),
) -> list[Path]:
    """Write a CA and a certificate per service into `directory`; return the files written.

    An existing `ca.pem` + `ca.key` in `directory` signs the new certificates (adding a service).
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    written: list[Path] = []

    def write(name: str, data: bytes, secret: bool) -> None:
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        written.append(path)

    def pem_key(key: Any) -> bytes:
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_pem, ca_key_pem = directory / "ca.pem", directory / "ca.key"
    if ca_pem.exists() and ca_key_pem.exists():  # add certificates under the existing CA
        ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_pem.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise InvalidArgument(f"{ca_key_pem} is not an EC private key", field="dir")
        ca_key = loaded
        ca_name = ca_cert.subject
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AlphaSwarm service CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
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
            .sign(ca_key, hashes.SHA256())
        )
        write("ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM), secret=False)
        write("ca.key", pem_key(ca_key), secret=True)
    extra = list(extra_names)
    for service in services:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in [*_dns_names(service, namespace), *extra]]
        sans += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        write(f"{service}.pem", cert.public_bytes(serialization.Encoding.PEM), secret=False)
        write(f"{service}.key", pem_key(key), secret=True)
    return written


def make_secrets(directory: Path, *, db_user: str = "alphaswarm", db_host: str = "postgres") -> list[Path]:
    """The secrets of the compose deployment: a database password (raw and as a libpq `pgpass`
    line), a first admin API token, and `certs/` from `make_certs`. Existing files are kept.

    The AlphaSwarm image runs as uid 1000: make the secrets as that user (or `chown` them to it).
    """
    import secrets

    from alphaswarm_common.auth import new_token

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)  # the folder keeps other host users out; compose mounts the files
    written: list[Path] = []

    def put(name: str, text: str, mode: int = 0o600) -> str:
        path = directory / name
        if path.exists():
            return path.read_text().strip()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        written.append(path)
        return text

    # PostgreSQL reads its password as its own user (uid 70 in the image): readable by all, inside
    # the 0700 folder. The rest is read by the image's user (uid 1000), libpq insists on 0600.
    password = put("postgres_password", secrets.token_urlsafe(24), 0o644)
    put("pgpass", f"{db_host}:5432:*:{db_user}:{password}")
    put("admin_token", new_token())
    if not (directory / "certs" / "ca.pem").exists():
        written += make_certs(directory / "certs")
    return written


def _read(path: Path | None, field: str) -> bytes:
    if path is None:
        raise InvalidArgument(f"ALPHASWARM_{field.upper()} is required for TLS", field=field)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}", field=field) from None


def _tls_settings_given(settings: Any, *, ca_alone: bool = False) -> bool:
    given = [settings.tls_ca, settings.tls_cert, settings.tls_key]
    if any(given) and not all(given) and not (ca_alone and given == [settings.tls_ca, None, None]):
        raise InvalidArgument(
            "ALPHASWARM_TLS_CA, ALPHASWARM_TLS_CERT and ALPHASWARM_TLS_KEY go together", field="tls_ca"
        )
    return all(given)


def server_credentials(settings: Any, *, require_client_auth: bool = True) -> grpc.ServerCredentials | None:
    """TLS credentials of a server (client certificates from the CA required), or None without TLS."""
    if not _tls_settings_given(settings):
        return None
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key, "tls_key"), _read(settings.tls_cert, "tls_cert"))],
        root_certificates=_read(settings.tls_ca, "tls_ca"),
        require_client_auth=require_client_auth,
    )


def client_credentials(settings: Any, *, bearer: str | None = None) -> ClientCredentials:
    """How this process calls services: its certificate (mTLS) and a bearer token.

    The bearer is `bearer`, else the shared service secret, else `settings.token` (a user's token).
    """
    from alphaswarm_common.auth import load_service_secret

    tls = None
    if _tls_settings_given(settings, ca_alone=True) and settings.tls_cert:
        tls = grpc.ssl_channel_credentials(
            root_certificates=_read(settings.tls_ca, "tls_ca"),
            private_key=_read(settings.tls_key, "tls_key"),
            certificate_chain=_read(settings.tls_cert, "tls_cert"),
        )
    elif settings.tls_ca and not settings.tls_cert and not settings.tls_key:
        # A user of the gateway's gRPC API: verify the server, present no certificate.
        tls = grpc.ssl_channel_credentials(root_certificates=_read(settings.tls_ca, "tls_ca"))
    if bearer is None:
        secret = load_service_secret(settings)
        if secret is not None:
            bearer = secret.decode()
        elif settings.token is not None:
            bearer = settings.token.get_secret_value()
    return ClientCredentials(tls=tls, bearer=bearer, server_name=settings.tls_server_name)
