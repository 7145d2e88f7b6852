"""Regenerate the Python stubs of every proto under protos/.

Usage: python scripts/gen_protos.py [--out DIR] [--check]

The stubs land in libs/alphaswarm_common/ under the proto path, so a proto at
protos/alphaswarm/trainer/v1/trainer_service.proto is imported as
`alphaswarm.trainer.v1.trainer_service_pb2` with no import rewriting.
`--check` regenerates into a temporary folder and exits 1 when the committed
stubs differ (CI runs it through tests/unit/test_protos_fresh.py). The check
compares what the protos decide: the version stamps a generator writes
(`GRPC_GENERATED_VERSION`, the protobuf runtime version check) are left out,
so a patch release of grpcio-tools does not make every stub "stale"; installs
resolve grpcio-tools from uv.lock, and `make protos` rewrites the stamps.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
OUT = ROOT / "libs" / "alphaswarm_common"
GENERATED_ROOT = "alphaswarm"


def generate(out: Path) -> list[Path]:
    sources = sorted(PROTOS.rglob("*.proto"))
    include = str(files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(s) for s in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sources


def generated_files(base: Path) -> dict[str, Path]:
    root = base / GENERATED_ROOT
    return {
        str(p.relative_to(base)): p for p in root.rglob("*") if p.is_file() and p.suffix in {".py", ".pyi"}
    }


# Generator version stamps: (pattern, placeholder). Everything else must match byte for byte.
_STAMPS = (
    (re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.M), "GRPC_GENERATED_VERSION = <stamp>"),
    (re.compile(r"^# Protobuf Python Version: .*$", re.M), "# Protobuf Python Version: <stamp>"),
    (
        re.compile(r"(_runtime_version\.Domain\.PUBLIC,\n)(\s+\d+,\n){3}\s+'[^']*',\n"),
        r"\1<stamp>\n",
    ),
)


def without_stamps(text: str) -> str:
    """The generated text with the generator's version stamps replaced by a placeholder."""
    for pattern, placeholder in _STAMPS:
        text = pattern.sub(placeholder, text)
    return text


def same_stub(a: Path, b: Path) -> bool:
    return without_stamps(a.read_text()) == without_stamps(b.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the committed stubs are stale")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            fresh, committed = generated_files(Path(tmp)), generated_files(OUT)
            stale = sorted(
                name
                for name in fresh.keys() | committed.keys()
                if name not in fresh or name not in committed or not same_stub(fresh[name], committed[name])
            )
        if stale:
            print("stale generated stubs (run `make protos`):", *stale, sep="\n  ")
            return 1
        print("generated stubs are fresh")
        return 0
    shutil.rmtree(OUT / GENERATED_ROOT, ignore_errors=True)
    sources = generate(OUT)
    print(f"generated stubs for {len(sources)} protos under {OUT / GENERATED_ROOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
