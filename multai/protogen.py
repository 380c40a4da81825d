"""Generates the Python modules and typed stubs for every proto under protos/ (python -m multai.protogen).

The stubs come from mypy-protobuf (`--mypy_out`, `--mypy_grpc_out`): unlike protoc's own `--pyi_out` they
type enums, oneofs, HasField names and the gRPC stubs and servicers. The generated packages
(multai.common.v1, multai.chat.v1, ...) land next to this file and are not committed.
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
    # The plugins come with mypy-protobuf, in this interpreter's bin folder whether or not it is on PATH.
    plugins = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={PROJECT_ROOT}",
        f"--mypy_out={PROJECT_ROOT}",
        f"--grpc_python_out={PROJECT_ROOT}",
        f"--mypy_grpc_out={PROJECT_ROOT}",
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
