"""`multai certs`: the mesh's CA and certificates, and client certificates for applications."""

import argparse
import sys

from multai.mesh_tls import create_mesh_certs, issue_client_cert
from multai.settings import MultaiSettings


def add_certs_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds `certs` and its subcommands to the `multai` parser."""
    certs = commands.add_parser("certs", help="mutual-TLS certificates of the gRPC mesh: create, client")
    cert_commands = certs.add_subparsers(dest="certs_command", required=True)
    create = cert_commands.add_parser(
        "create",
        help="a new CA (10 years) and the mesh's certificate (2 years); multai serve makes them if missing",
    )
    create.add_argument(
        "--san",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="more DNS names or IPs of the mesh's certificate, which always has multai-mesh, localhost, "
        "127.0.0.1 and ::1",
    )
    create.add_argument(
        "--force",
        action="store_true",
        help="replace an existing CA: every certificate it issued stops working",
    )
    client = cert_commands.add_parser(
        "client", help="a client certificate (2 years) for an application: NAME.pem and NAME-key.pem"
    )
    client.add_argument("name", help="the application's name, 1 to 64 of A-Z a-z 0-9 _ . -")
    for sub in (create, client):
        sub.add_argument(
            "--dir",
            dest="certs_dir",
            help="certs folder (default: MULTAI_CERTS_DIR, else MULTAI_STATE_DIR/certs)",
        )


def run_certs_command(args: argparse.Namespace) -> None:
    """Runs a parsed `multai certs ...` command; exits non-zero with a message on a refused one."""
    settings = MultaiSettings(**({"certs_dir": args.certs_dir} if args.certs_dir else {}))
    folder = settings.mesh_certs_dir()
    try:
        if args.certs_command == "create":
            written = create_mesh_certs(folder, args.san, force=args.force)
        else:
            written = list(issue_client_cert(folder, args.name))
    except (OSError, ValueError) as exc:
        sys.exit(str(exc))
    for path in written:
        print(path)
