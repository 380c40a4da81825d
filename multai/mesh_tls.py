"""Mutual TLS for the mesh: the CA and certificates `multai certs` makes, the servers' credentials, and the
one factory every gRPC client of the mesh opens its channels with.

A certs folder holds `ca.pem` and `ca-key.pem` (the mesh's own CA, EC P-256, valid 10 years), `mesh.pem` and
`mesh-key.pem` (what every mesh process presents, as server and as client; valid 2 years) and, for each
application, `NAME.pem` and `NAME-key.pem` (client only; valid 2 years). Private keys are written 0600.
"""

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from multai.settings import MultaiSettings
from multai.tracing import trace_context_interceptors

CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 730
# The name every mesh process's certificate carries and every client checks, whatever address it dials.
MESH_SERVER_NAME = "multai-mesh"
MESH_IDENTITY = "mesh"
DEFAULT_SANS = (MESH_SERVER_NAME, "localhost", "127.0.0.1", "::1")
CA_IDENTITY = "ca"
TARGET_NAME_OVERRIDE = ("grpc.ssl_target_name_override", MESH_SERVER_NAME)
CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED_NAMES = {CA_IDENTITY, MESH_IDENTITY}


def cert_file(folder: Path, identity: str) -> Path:
    """The certificate of `identity` (`mesh` or an application's name)."""
    return folder / f"{identity}.pem"


def key_file(folder: Path, identity: str) -> Path:
    """The private key of `identity`."""
    return folder / f"{identity}-key.pem"


def _write(path: Path, data: bytes, *, private: bool) -> None:
    # Written beside the target and renamed, so a key file is never readable by others, even briefly.
    scratch = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as f:
        f.write(data)
    os.replace(scratch, path)


def _save(folder: Path, identity: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key_file(folder, identity), key_pem, private=True)
    _write(cert_file(folder, identity), cert.public_bytes(serialization.Encoding.PEM), private=False)


def _subject_names(names: Sequence[str]) -> list[x509.GeneralName]:
    general: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return general


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    days: int,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """A certificate for `key`, signed by `issuer` (the CA), or self-signed when there is none."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # A minute back, for clocks slightly behind the one that issued it.
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    common_name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usages: list[x509.ObjectIdentifier],
    names: Sequence[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(cert_sign=False), True),
        (x509.ExtendedKeyUsage(usages), False),
    ]
    if names:
        extensions.append((x509.SubjectAlternativeName(_subject_names(names)), False))
    return _certificate(common_name, key, LEAF_VALID_DAYS, ca, extensions), key


def create_mesh_certs(folder: Path, extra_names: Sequence[str] = (), *, force: bool = False) -> list[Path]:
    """A new CA and the mesh's certificate, for multai-mesh, localhost, 127.0.0.1, ::1 and `extra_names`.

    Refuses to replace existing files unless `force`: a new CA invalidates every certificate the old one
    issued, which is how access is revoked. Returns the files written.
    """
    files = [f(folder, i) for i in (CA_IDENTITY, MESH_IDENTITY) for f in (cert_file, key_file)]
    existing = [path for path in files if path.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{existing[0]} exists; --force replaces the CA and invalidates every certificate it issued"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (_key_usage(cert_sign=True), True),
    ]
    ca_cert = _certificate("MultAI mesh CA", ca_key, CA_VALID_DAYS, None, ca_extensions)
    _save(folder, CA_IDENTITY, ca_cert, ca_key)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert, key = _leaf(MESH_SERVER_NAME, (ca_cert, ca_key), usages, [*DEFAULT_SANS, *extra_names])
    _save(folder, MESH_IDENTITY, cert, key)
    return files


def ensure_mesh_certs(folder: Path) -> None:
    """Creates the CA and the mesh's certificate on first start; never replaces a file.

    A folder that has some of ca.pem, mesh.pem and mesh-key.pem but not all is an error rather than
    something to repair: the files present may be in use. ca-key.pem need not be there (a deployment may
    keep the CA key elsewhere).
    """
    needed = [
        cert_file(folder, CA_IDENTITY),
        cert_file(folder, MESH_IDENTITY),
        key_file(folder, MESH_IDENTITY),
    ]
    missing = [path for path in needed if not path.exists()]
    if not missing:
        return
    if len(missing) < len(needed):
        raise FileNotFoundError(
            f"{missing[0]} is missing beside the other certificates; "
            "`multai certs create --force` makes a new set"
        )
    create_mesh_certs(folder)


def issue_client_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A client certificate for the application `name`, signed by the folder's CA: NAME.pem, NAME-key.pem."""
    if not CLIENT_NAME.match(name) or name in RESERVED_NAMES or name.endswith("-key"):
        raise ValueError(
            f"{name!r} cannot name a client: use letters, digits, '.', '_' and '-', not 'ca', 'mesh' or *-key"
        )
    cert_path, key_path = cert_file(folder, name), key_file(folder, name)
    if cert_path.exists():
        raise FileExistsError(f"{cert_path} exists")
    ca_cert = x509.load_pem_x509_certificate(_read(cert_file(folder, CA_IDENTITY)))
    ca_key = serialization.load_pem_private_key(_read(key_file(folder, CA_IDENTITY)), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_file(folder, CA_IDENTITY)} is not an EC key made by `multai certs create`")
    cert, key = _leaf(name, (ca_cert, ca_key), [ExtendedKeyUsageOID.CLIENT_AUTH])
    _save(folder, name, cert, key)
    return cert_path, key_path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{path} is missing: `multai certs create` (or the first `multai serve`) makes the mesh's "
            "certificates, `multai certs client NAME` an application's"
        ) from exc


def server_credentials(folder: Path) -> grpc.ServerCredentials:
    """The mesh's certificate, and a demand for a client certificate signed by the CA at the handshake."""
    return grpc.ssl_server_credentials(
        [(_read(key_file(folder, MESH_IDENTITY)), _read(cert_file(folder, MESH_IDENTITY)))],
        root_certificates=_read(cert_file(folder, CA_IDENTITY)),
        require_client_auth=True,
    )


class MeshChannels:
    """Opens a process's gRPC channels to the mesh.

    With a certs folder: mutual TLS, presenting `identity`'s certificate and trusting only the folder's CA.
    Clients check the name multai-mesh whatever address they dial, so a certificate holds for any address
    (k8s service names, pod IPs). Without a folder (`mesh_tls` off): plaintext, which lets anyone who reaches
    a port unload models, take leases or register a service; for debugging only.
    """

    def __init__(self, certs_dir: Path | None, identity: str = MESH_IDENTITY) -> None:
        self.certs_dir = certs_dir
        self.identity = identity
        self._credentials: grpc.ChannelCredentials | None = None

    @classmethod
    def from_settings(cls, settings: MultaiSettings, identity: str = MESH_IDENTITY) -> "MeshChannels":
        """Mutual TLS with the certs folder of `settings`, or plaintext when `mesh_tls` is off."""
        return cls(settings.mesh_certs_dir() if settings.mesh_tls else None, identity)

    def _channel_credentials(self) -> grpc.ChannelCredentials | None:
        # Read on first use, so that a client made where no certificate is needed yet does not fail.
        if self.certs_dir is not None and self._credentials is None:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(cert_file(self.certs_dir, CA_IDENTITY)),
                private_key=_read(key_file(self.certs_dir, self.identity)),
                certificate_chain=_read(cert_file(self.certs_dir, self.identity)),
            )
        return self._credentials

    def aio_channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A grpc.aio channel to `address`."""
        credentials = self._channel_credentials()
        interceptors = trace_context_interceptors()
        if credentials is None:
            return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
        return grpc.aio.secure_channel(
            address, credentials, options=[*options, TARGET_NAME_OVERRIDE], interceptors=interceptors
        )

    def sync_channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A blocking channel to `address` (the blocking client library)."""
        credentials = self._channel_credentials()
        if credentials is None:
            return grpc.insecure_channel(address, options=list(options))
        return grpc.secure_channel(address, credentials, options=[*options, TARGET_NAME_OVERRIDE])
