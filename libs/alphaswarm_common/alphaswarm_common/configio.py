"""Reading a run config document (YAML or JSON: JSON is YAML) into an `AlphaBacktestConfig`.

One parser for every entrypoint (REST body, CLI file, `AlphaBacktestExperiment`),
so the same mistake gives the same error everywhere: a document that does not
parse is InvalidArgument on `body` with the line and column; a config that does
not validate is InvalidArgument naming the first offending field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.protoconv import check_config_ranges, validation_error
from alphaswarm_common.protoranges import check_text

__all__ = ["parse_config", "parse_config_document", "read_config_file"]


# libyaml's parser when PyYAML was built with it (several times faster on large documents).
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _decode(raw: bytes, field: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} ({exc.reason})",
            field=field,
            reason="INVALID_ENCODING",
        ) from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _load(text: str) -> Any:
    """A JSON document through the json module (many times faster than YAML); anything else, and
    JSON it refuses (flow-style YAML, NaN, a syntax error YAML reports with its position), as YAML."""
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, parse_constant=_not_json)
        except ValueError:
            pass
    return yaml.load(text, Loader=_SAFE_LOADER)


def _unreadable(exc: ValueError) -> str:
    """What a value the parser could not convert is, without the interpreter's advice."""
    text = str(exc)
    if "integer string conversion" in text:
        return f"an integer has more than {sys.get_int_max_str_digits()} digits"
    return text.split(";", 1)[0]


def _may_hold_bad_text_or_aliases(text: str) -> bool:
    """Whether parsing `text` can have produced a lone surrogate or repeated values through aliases.

    Text decoded from UTF-8 holds no surrogate, so one can only come from an escape (`\\u`,
    `\\U`); a value is repeated only through an alias (`*name`). Without either, the walk of
    `check_text` (seconds for a document of millions of values) is skipped.
    """
    return "\\u" in text or "\\U" in text or "*" in text or _has_surrogate(text)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_config_document(raw: bytes | str, *, field: str = "body") -> dict[str, Any]:
    """The mapping in a YAML/JSON document.

    Bytes that are not UTF-8, a document that does not parse and text that is not valid Unicode
    (a lone surrogate such as "\\ud800") are InvalidArgument naming `field` (or the offending key).
    """
    text = _decode(raw, field) if isinstance(raw, bytes) else raw
    if not text.strip():
        raise InvalidArgument(
            "the document is empty; send the run config as JSON or YAML", field=field, reason="EMPTY_BODY"
        )
    hint = ""
    if "\n" not in text.strip() and ":" in text and not text.lstrip().startswith(("{", "[")):
        hint = (
            " (the document arrived on one line: `curl -d @file` strips newlines, which breaks block-style"
            " YAML; send it with `--data-binary @file`, or write the file in flow style)"
        )
    try:
        doc = _load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidArgument(
            f"the document is neither JSON nor YAML{where}: {getattr(exc, 'problem', exc)}{hint}",
            field=field,
            reason="INVALID_YAML",
        ) from exc
    except ValueError as exc:  # a value the parser cannot convert (a 5000-digit integer, bad text)
        raise InvalidArgument(
            f"the document holds a value that cannot be read: {_unreadable(exc)}",
            field=field,
            reason="INVALID_YAML",
        ) from None
    if not isinstance(doc, dict):
        raise InvalidArgument(
            f"the document must be a mapping of the run config sections{hint}",
            field=field,
            reason="INVALID_BODY",
        )
    if _may_hold_bad_text_or_aliases(text):
        # Without aliases a document has fewer values than characters: more means aliases expanded it.
        check_text(doc, max_nodes=len(text) + 1, document=field)
    return doc


def parse_config(doc: Mapping[str, Any]) -> AlphaBacktestConfig:
    """Validate a mapping; errors name the field (`details["status"]` is 422 for REST)."""
    try:
        cfg = AlphaBacktestConfig.model_validate(dict(doc))
    except ValidationError as exc:
        err = validation_error(exc)
        err.details["status"] = 422
        raise err from exc
    check_config_ranges(cfg)
    return cfg


def read_config_file(path: str | Path) -> AlphaBacktestConfig:
    p = Path(path)
    if not p.is_file():
        raise InvalidArgument(f"no config file at {p}", field="config")
    return parse_config(parse_config_document(p.read_bytes(), field="config"))
