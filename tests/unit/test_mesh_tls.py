"""multai.mesh_tls and `multai certs`: what the certificates say, where they go, what is never replaced."""

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from multai.cli import main
from multai.mesh_tls import (
    LEAF_VALID_DAYS,
    MeshChannels,
    create_mesh_certs,
    ensure_mesh_certs,
    issue_client_cert,
    server_credentials,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_mesh_certificate_names_every_address_and_serves_both_ends(tmp_path: Path) -> None:
    create_mesh_certs(tmp_path, ["multai-chat.default.svc", "10.1.2.3"])
    cert = load(tmp_path / "mesh.pem")
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["multai-mesh", "localhost", "multai-chat.default.svc"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3")
    ]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == LEAF_VALID_DAYS

    ca = load(tmp_path / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    cert.verify_directly_issued_by(ca)
    assert {mode(tmp_path / f) for f in ("ca-key.pem", "mesh-key.pem")} == {0o600}


def test_ensure_creates_once_and_never_replaces(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    ensure_mesh_certs(folder)
    assert mode(folder) == 0o700
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(before) == {"ca.pem", "ca-key.pem", "mesh.pem", "mesh-key.pem"}
    ensure_mesh_certs(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(FileExistsError, match="--force"):
        create_mesh_certs(folder)
    (folder / "mesh-key.pem").unlink()
    with pytest.raises(FileNotFoundError, match=r"mesh-key\.pem"):
        ensure_mesh_certs(folder)
    create_mesh_certs(folder, force=True)
    assert (folder / "ca.pem").read_bytes() != before["ca.pem"]


def test_a_client_certificate_verifies_against_the_ca_and_authenticates_clients_only(tmp_path: Path) -> None:
    create_mesh_certs(tmp_path)
    cert_path, key_path = issue_client_cert(tmp_path, "billing-app")
    assert (cert_path.name, key_path.name) == ("billing-app.pem", "billing-app-key.pem")
    assert mode(key_path) == 0o600
    cert = load(cert_path)
    cert.verify_directly_issued_by(load(tmp_path / "ca.pem"))
    assert cert.subject.rfc4514_string() == "CN=billing-app"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(FileExistsError):
        issue_client_cert(tmp_path, "billing-app")
    for name in ("mesh", "ca", "x-key", "../up", ""):
        with pytest.raises(ValueError):
            issue_client_cert(tmp_path, name)


def test_credentials_need_the_files_and_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="multai certs create"):
        server_credentials(tmp_path)
    with pytest.raises(FileNotFoundError, match="multai certs client NAME"):
        MeshChannels(tmp_path, "app").aio_channel("127.0.0.1:1")
    # Plaintext (mesh_tls off) needs no files.
    MeshChannels(None).sync_channel("127.0.0.1:1").close()


def test_certs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["certs", "create", "--dir", str(tmp_path), "--san", "edge.internal"])
    main(["certs", "client", "app", "--dir", str(tmp_path)])
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == [
        "ca.pem",
        "ca-key.pem",
        "mesh.pem",
        "mesh-key.pem",
        "app.pem",
        "app-key.pem",
    ]
    names = load(tmp_path / "mesh.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "edge.internal" in names.value.get_values_for_type(x509.DNSName)
    with pytest.raises(SystemExit, match="--force"):
        main(["certs", "create", "--dir", str(tmp_path)])
