"""The artifact path rules and content types of the gateway's MLflow routes."""

from __future__ import annotations

import pytest

from alphaswarm_common.errors import InvalidArgument
from alphaswarm_gateway.mlflow_api import _content_type, safe_artifact_path


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("equity_curve.json", "equity_curve.json"),
        ("plots/cumulative_ic.png", "plots/cumulative_ic.png"),
        ("plots//ic.png", "plots/ic.png"),
        ("plots/", "plots"),
        ("a..b/c...json", "a..b/c...json"),
    ],
)
def test_relative_paths_pass(raw: str, clean: str) -> None:
    assert safe_artifact_path(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "/",
        "..",
        "../etc/passwd",
        "plots/../../x",
        "plots/..",
        "./x.json",
        "/etc/passwd",
        "C:/windows/win.ini",
        "c:x",
        "..\\x",
        "x\x00.json",
    ],
)
def test_traversal_and_absolute_paths_are_refused_naming_path(raw: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        safe_artifact_path(raw)
    assert err.value.field == "path"


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("equity_curve.json", "application/json; charset=utf-8"),
        ("plots/ic.png", "image/png"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("model/model.skops", "application/octet-stream"),
        ("data.csv.gz", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ],
)
def test_content_types(path: str, media: str) -> None:
    assert _content_type(path) == media
