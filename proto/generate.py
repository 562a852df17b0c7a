"""Regenerates the Python code for proto/ (``make proto``), or checks it is fresh (``--check``).

The generated modules are committed beside their .proto sources so that the services import them
without a build step; CI runs ``--check`` so that a .proto change without regeneration fails.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "apidevs" / "alerts" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
# mypy-protobuf's plugins write the type stubs: messages with enum fields typed as their enum's values,
# and the gRPC stubs (which grpcio-tools writes untyped). They sit beside this interpreter in the
# virtualenv, which need not be on PATH.
MYPY_PLUGIN = Path(sys.executable).parent / "protoc-gen-mypy"
MYPY_GRPC_PLUGIN = Path(sys.executable).parent / "protoc-gen-mypy_grpc"


def _generate(out_dir: Path) -> None:
    include = Path(protoc.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={MYPY_PLUGIN}",
        f"--mypy_out={out_dir}",
        "--mypy_opt=quiet",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy_grpc={MYPY_GRPC_PLUGIN}",
        f"--mypy_grpc_out={out_dir}",
        "--mypy_grpc_opt=quiet",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def _generated_files(root: Path) -> dict[str, Path]:
    package = root / "apidevs" / "alerts" / "v1"
    return {p.name: p for p in package.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the committed code is stale")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        _generate(fresh_root)
        fresh = _generated_files(fresh_root)
        current = _generated_files(PROTO_ROOT)
        stale = sorted(
            name
            for name in fresh.keys() | current.keys()
            if name not in fresh
            or name not in current
            or not filecmp.cmp(fresh[name], current[name], shallow=False)
        )
        if options.check:
            if stale:
                print(f"generated code is stale: {', '.join(stale)}; run `make proto`", file=sys.stderr)
                return 1
            print("generated code is fresh")
            return 0
        for name in current.keys() - fresh.keys():
            current[name].unlink()
        for name, path in fresh.items():
            shutil.copyfile(path, PACKAGE_DIR / name)
        print(f"regenerated {len(fresh)} files in {PACKAGE_DIR.relative_to(PROTO_ROOT.parent)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
