"""Where data may come from: a shipped dataset name, `synthetic`, or a file under a data root.

`DatasetConfig.source` is attacker-controlled input (it arrives over REST and
gRPC), so a path is confined to the process's data roots:

* the roots are `Settings.data_roots` (`ALPHASWARM_DATA_ROOTS`, a JSON list
  or an `os.pathsep`-separated list), `./data` of the working directory when
  none is configured; every service entry point installs them with
  `configure_data_roots` (one policy per process; the embedded stack's
  services share theirs);
* a relative path is looked up against the working directory, then against
  each root in order (`prices.csv` finds `<root>/prices.csv`); `~` is
  expanded; an absolute path is taken as given;
* the candidate is resolved with symlinks (`Path.resolve`) and must lie
  inside a root after resolution, so `../` and symlinks pointing out of a
  root are refused like any outside path;
* every refusal is `DataError` (an `InvalidArgument`: HTTP 400, gRPC
  INVALID_ARGUMENT) naming `dataset_cfg.source` with one
  message that reveals neither whether the file exists nor where it is; a
  missing file inside a root is reported by the path as given (relative) or
  relative to its root, never as an absolute path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from alphaswarm_common.errors import DataError, InvalidArgument

__all__ = [
    "DEFAULT_DATA_ROOT",
    "DataFile",
    "configure_data_roots",
    "data_roots",
    "resolve_data_file",
]

DEFAULT_DATA_ROOT = Path("data")
"""The data root when none is configured, relative to the working directory."""

_ROOTS: tuple[Path, ...] | None = None


def configure_data_roots(roots: Iterable[str | Path]) -> tuple[Path, ...]:
    """Install the process's data roots (resolved, absolute); returns them."""
    global _ROOTS
    resolved = tuple(dict.fromkeys(Path(r).expanduser().resolve() for r in roots))
    if not resolved:
        raise InvalidArgument("at least one data root is required", field="data_roots")
    _ROOTS = resolved
    return resolved


def data_roots() -> tuple[Path, ...]:
    """The configured roots, else `./data` of the working directory."""
    return _ROOTS if _ROOTS is not None else (DEFAULT_DATA_ROOT.resolve(),)


@dataclass(frozen=True)
class DataFile:
    """A data file inside a root: where it is and how messages may name it (relative to its root)."""

    path: Path
    display: str


def _refused(field: str, shipped: Sequence[str]) -> DataError:
    return DataError(
        f"must be a shipped dataset ({', '.join(shipped)}) or a path to a file under a configured data "
        "root (ALPHASWARM_DATA_ROOTS); this source is neither",
        field=field,
    )


def _root_of(path: Path, roots: Sequence[Path]) -> Path | None:
    return next((r for r in roots if path == r or path.is_relative_to(r)), None)


def resolve_data_file(
    source: str,
    *,
    shipped: Sequence[str],
    roots: Sequence[Path] | None = None,
    base_dir: str | Path | None = None,
    field: str = "dataset_cfg.source",
) -> DataFile:
    """The file `source` names inside a data root (see the module docstring); `DataError` otherwise."""
    roots = tuple(roots) if roots is not None else data_roots()
    text = source.strip()
    if not text or "\x00" in text:
        raise _refused(field, shipped)
    raw = Path(text).expanduser()
    if raw.is_absolute():
        candidates = [raw]
    else:
        candidates = [Path(base_dir or Path.cwd()) / raw, *(r / raw for r in roots)]
    inside: DataFile | None = None
    for candidate in candidates:
        try:
            resolved = candidate.resolve(strict=False)
        except (OSError, RuntimeError):  # a symlink loop or an unreadable component
            continue
        root = _root_of(resolved, roots)
        if root is None:
            continue
        found = DataFile(resolved, resolved.relative_to(root).as_posix() or ".")
        if resolved.is_file():
            return found
        inside = inside or found
    if inside is not None:
        shown = text if not raw.is_absolute() else inside.display
        if inside.path.is_dir():
            raise DataError(f"{shown!r} is not a file", field=field)
        raise DataError(f"data file not found under the data roots: {shown!r}", field=field)
    raise _refused(field, shipped)
