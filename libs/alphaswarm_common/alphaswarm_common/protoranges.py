"""Range checks of the integers and strings a document puts into proto fields.

A JSON or YAML document has integers of any size and strings of any code
points, while a proto `int32` holds -2**31..2**31-1 and a proto `string` only
valid Unicode (no lone surrogate such as "\\ud800"). Setting such a value on a
message raises a bare ValueError that names no field; these checks run first
and raise InvalidArgument naming the field with its dotted path.

`check_message_doc(doc, descriptor)` walks a proto-JSON document alongside the
message descriptor; `check_text(doc)` walks any document for unencodable text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from alphaswarm_common.errors import InvalidArgument

__all__ = ["INT32_MAX", "INT32_MIN", "INT64_MAX", "INT64_MIN", "check_message_doc", "check_text", "int_range"]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1

_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SINT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SFIXED32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_UINT32: (0, UINT32_MAX),
    FieldDescriptor.TYPE_FIXED32: (0, UINT32_MAX),
    FieldDescriptor.TYPE_INT64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SINT64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SFIXED64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_UINT64: (0, UINT64_MAX),
    FieldDescriptor.TYPE_FIXED64: (0, UINT64_MAX),
}

# Messages whose JSON form is free-form (numbers are doubles there): nothing to check by field.
_FREE_FORM = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})


def int_range(field: Any) -> tuple[int, int] | None:
    """The (min, max) an integer field holds, or None for a field that is not an integer."""
    return _RANGES.get(field.type)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _out_of_range(path: str, lo: int, hi: int) -> InvalidArgument:
    err = InvalidArgument(f"must be an integer between {lo} and {hi}", field=path, reason="OUT_OF_RANGE")
    err.details["status"] = 422
    return err


def _check_scalar(value: Any, field: Any, path: str) -> None:
    bounds = int_range(field)
    if bounds is not None and isinstance(value, int) and not isinstance(value, bool):
        lo, hi = bounds
        if not lo <= value <= hi:
            raise _out_of_range(path, lo, hi)
    elif field.type == FieldDescriptor.TYPE_STRING and isinstance(value, str):
        _check_str(value, path)


def _check_value(value: Any, field: Any, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name in _FREE_FORM:
            check_text(value, path)
        elif isinstance(value, Mapping):
            check_message_doc(value, field.message_type, prefix=path)
    else:
        _check_scalar(value, field, path)


def check_message_doc(doc: Mapping[str, Any], descriptor: Any, *, prefix: str = "") -> None:
    """`descriptor` is a message Descriptor. Raise InvalidArgument (naming the field) for a value the message's field cannot hold."""
    for key, value in doc.items():
        field = descriptor.fields_by_name.get(key) or _by_json_name(descriptor, key)
        if field is None or value is None:
            continue  # unknown fields are the parser's to report
        path = _join(prefix, key)
        is_map = field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
        if is_map and isinstance(value, Mapping):
            value_field = field.message_type.fields_by_name["value"]
            for k, v in value.items():
                _check_str(str(k), path)
                _check_value(v, value_field, f"{path}.{k}")
        elif _is_repeated(field) and isinstance(value, list):
            for i, item in enumerate(value):
                _check_value(item, field, f"{path}[{i}]")
        else:
            _check_value(value, field, path)


def _is_repeated(field: Any) -> bool:
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(getattr(field, "label", None) == FieldDescriptor.LABEL_REPEATED)


def _by_json_name(descriptor: Any, key: str) -> Any:
    for field in descriptor.fields:
        if field.json_name == key:
            return field
    return None


def _check_str(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        err = InvalidArgument(
            f"contains an unpaired surrogate (U+{ord(value[exc.start]):04X}) at character {exc.start}; "
            "text must be valid Unicode",
            field=path or None,
            reason="INVALID_TEXT",
        )
        raise err from None


def check_text(
    doc: Any, prefix: str = "", *, max_nodes: int | None = None, document: str | None = None
) -> None:
    """Raise InvalidArgument naming the first string (or key) of a document that is not valid Unicode.

    With `max_nodes`, a document of more values than that (YAML aliases repeat a value without
    repeating its text: a few hundred bytes can stand for billions of values) is InvalidArgument
    on `document` (else `prefix`) before the walk goes further.
    """
    seen = 0
    stack: list[tuple[Any, str]] = [(doc, prefix)]
    while stack:
        node, path = stack.pop()
        seen += 1
        if max_nodes is not None and seen > max_nodes:
            raise InvalidArgument(
                f"expands to more than {max_nodes} values (YAML aliases repeating values); "
                "write the values out instead",
                field=document or prefix or None,
                reason="DOCUMENT_TOO_COMPLEX",
            )
        if isinstance(node, str):
            _check_str(node, path)
        elif isinstance(node, Mapping):
            for key, value in reversed(list(node.items())):
                child = _join(path, str(key))
                if isinstance(key, str):
                    _check_str(key, child)
                stack.append((value, child))
        elif isinstance(node, list | tuple):
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(node))))
