"""Generates the Python modules and .pyi stubs for every proto under protos/ (run: python -m multai.protogen).

The generated packages (multai.common.v1, multai.chat.v1, ...) land next to this file and are not committed.
"""

import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = PROJECT_ROOT / "protos"


def generate() -> list[Path]:
    """Compiles all protos into PROJECT_ROOT and returns the proto files compiled."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    well_known = str(files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={PROJECT_ROOT}",
        f"--pyi_out={PROJECT_ROOT}",
        f"--grpc_python_out={PROJECT_ROOT}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return protos


def main() -> None:
    protos = generate()
    print(f"generated stubs for {len(protos)} proto files", file=sys.stderr)


if __name__ == "__main__":
    main()
