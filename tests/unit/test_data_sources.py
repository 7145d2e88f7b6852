"""`dataset_cfg.source` is confined to shipped datasets and files under the configured data roots:
traversal, absolute paths and symlinks out of a root are refused with one message that names no
path; a file under a root loads, by absolute path, by path relative to the working directory or
relative to the root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import (
    check_dataset_source,
    clear_cache,
    configure_data_roots,
    data_roots,
    load_panel,
)
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.settings import Settings

pytestmark = pytest.mark.unit


def _csv(path: Path) -> Path:
    dates = pd.bdate_range("2021-01-04", periods=30).strftime("%Y-%m-%d")
    close = 100 + np.arange(30.0)
    pd.DataFrame({"date": dates, "AAA": close, "BBB": close * 2}).to_csv(path, index=False)
    return path


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """root/ (the only data root) with prices.csv and sub/more.csv; outside/ next to it with secret.csv."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    paths = {
        "root": root,
        "prices": _csv(root / "prices.csv"),
        "more": _csv(root / "sub" / "more.csv"),
        "secret": _csv(outside / "secret.csv"),
        "outside": outside,
    }
    previous = data_roots()
    configure_data_roots([root])
    clear_cache()
    try:
        yield paths
    finally:
        configure_data_roots(previous)
        clear_cache()


def _load(source: str | Path) -> object:
    return load_panel(DatasetConfig(source=str(source)))


def _refusal(source: str | Path, *absolute: Path) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        _load(source)
    exc = err.value
    assert exc.field == "dataset_cfg.source"
    text = str(exc)
    assert "/" not in text, text  # no path at all, absolute or relative
    for path in absolute:
        assert str(path) not in text and path.name not in text, text
    return exc


def test_a_file_under_a_root_loads_by_absolute_relative_and_root_relative_path(
    layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    by_absolute = load_panel(DatasetConfig(source=str(layout["prices"])))
    assert list(by_absolute.symbols) == ["AAA", "BBB"]
    monkeypatch.chdir(layout["root"].parent)
    assert _load("root/prices.csv").fingerprint == by_absolute.fingerprint  # against the working directory
    assert _load("prices.csv").fingerprint == by_absolute.fingerprint  # against the root
    assert _load("sub/more.csv").fingerprint == by_absolute.fingerprint
    assert _load("sub/../prices.csv").fingerprint == by_absolute.fingerprint  # stays inside: fine
    assert _load("sp500") is not None and _load("synthetic") is not None


def test_traversal_out_of_a_root_is_refused(layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(layout["root"])
    exc = _refusal("../outside/secret.csv", layout["secret"], layout["outside"])
    assert "shipped dataset" in exc.message and "data root" in exc.message
    _refusal("../../etc/x.csv")
    _refusal("sub/../../outside/secret.csv", layout["secret"])


def test_absolute_paths_outside_the_roots_are_refused_alike_whether_or_not_they_exist(
    layout: dict[str, Path],
) -> None:
    exists = _refusal(layout["secret"], layout["secret"])
    missing = _refusal(layout["outside"] / "missing.csv", layout["outside"])
    assert exists.message == missing.message and exists.reason == missing.reason
    assert _refusal("/etc/passwd").message == exists.message
    assert _refusal(layout["outside"]).message == exists.message  # a folder outside: same answer


def test_symlinks_out_of_a_root_are_refused(layout: dict[str, Path]) -> None:
    root = layout["root"]
    (root / "link.csv").symlink_to(layout["secret"])
    (root / "linked_dir").symlink_to(layout["outside"], target_is_directory=True)
    _refusal(root / "link.csv", layout["secret"])
    _refusal("link.csv", layout["secret"])
    _refusal("linked_dir/secret.csv", layout["secret"])
    # A symlink that stays inside the root is fine.
    (root / "alias.csv").symlink_to(layout["prices"])
    assert _load("alias.csv") is not None


def test_a_missing_file_inside_a_root_is_named_relative_to_it(layout: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgument) as err:
        _load(layout["root"] / "sub" / "typo.csv")
    assert err.value.field == "dataset_cfg.source"
    assert "'sub/typo.csv'" in err.value.message and str(layout["root"]) not in str(err.value)
    with pytest.raises(InvalidArgument) as err:
        _load("typo.csv")
    assert "'typo.csv'" in err.value.message and "not found" in err.value.message


def test_read_errors_do_not_reveal_the_absolute_path(layout: dict[str, Path]) -> None:
    (layout["root"] / "broken.parquet").write_text("not parquet")
    (layout["root"] / "nodate.csv").write_text("x,y\n1,2\n")
    for name in ("broken.parquet", "nodate.csv"):
        with pytest.raises(InvalidArgument) as err:
            _load(layout["root"] / name)
        assert name in str(err.value) and str(layout["root"]) not in str(err.value), err.value


def test_check_dataset_source_refuses_without_reading(layout: dict[str, Path]) -> None:
    check_dataset_source(DatasetConfig(source="prices.csv"))
    check_dataset_source(DatasetConfig(source="SP500"))
    with pytest.raises(InvalidArgument) as err:
        check_dataset_source(DatasetConfig(source=str(layout["secret"])), field="source.dataset_cfg.source")
    assert err.value.field == "source.dataset_cfg.source" and str(layout["secret"]) not in str(err.value)


def test_data_roots_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALPHASWARM_DATA_ROOTS", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert Settings().resolved_data_roots() == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("ALPHASWARM_DATA_ROOTS", f'["{tmp_path / "c"}"]')
    assert Settings().resolved_data_roots() == [tmp_path / "c"]
    monkeypatch.delenv("ALPHASWARM_DATA_ROOTS")
    monkeypatch.chdir(tmp_path)
    assert Settings().resolved_data_roots() == [tmp_path / "data"]  # the default: ./data
