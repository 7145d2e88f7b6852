"""The committed gRPC stubs are exactly what protoc generates from protos/."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _gen_protos_module():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_freshness_ignores_generator_stamps_only() -> None:
    gen = _gen_protos_module()
    stub = (ROOT / "libs/alphaswarm_common/alphaswarm/common/v1/arrays_pb2.py").read_text()
    grpc_stub = (
        ROOT / "libs/alphaswarm_common/alphaswarm/trainer/v1/trainer_service_pb2_grpc.py"
    ).read_text()
    restamped = stub.replace("Protobuf Python Version: ", "Protobuf Python Version: 99.")
    restamped = restamped.replace(
        "_runtime_version.Domain.PUBLIC,\n    ", "_runtime_version.Domain.PUBLIC,\n    9"
    )
    assert restamped != stub
    assert gen.without_stamps(restamped) == gen.without_stamps(stub)
    regrpc = grpc_stub.replace("GRPC_GENERATED_VERSION = '", "GRPC_GENERATED_VERSION = '9")
    assert regrpc != grpc_stub and gen.without_stamps(regrpc) == gen.without_stamps(grpc_stub)
    # A change the protos decide is still a difference.
    changed = stub.replace("alphaswarm.common.v1.Array", "alphaswarm.common.v1.Arrax", 1)
    assert gen.without_stamps(changed) != gen.without_stamps(stub)
    changed_grpc = grpc_stub.replace("/alphaswarm.trainer.v1.TrainerService/", "/alphaswarm.trainer.v1.X/", 1)
    assert gen.without_stamps(changed_grpc) != gen.without_stamps(grpc_stub)
