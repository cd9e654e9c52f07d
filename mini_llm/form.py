"""The `model` field of a multipart/form-data body (audio transcriptions, image edits).

Only the field's value is found and, when the route renames the model, replaced; every
other byte (the uploaded file above all) goes upstream as the client sent it.
"""

from __future__ import annotations

import re

from .errors import ProxyError

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_NAME = re.compile(rb'\bname="?([^";\r\n]*)"?', re.IGNORECASE)


def is_form(content_type: str) -> bool:
    return content_type.lower().startswith("multipart/form-data")


def form_model(body: bytes, content_type: str) -> tuple[str, tuple[int, int]]:
    """The `model` field's text and where its value lies in the body; 400 when missing."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise ProxyError(400, "invalid_form", "multipart body without a boundary")
    delimiter = b"--" + (found.group(1) or found.group(2)).encode("latin-1")
    start = body.find(delimiter)
    while start >= 0:
        part = start + len(delimiter)
        if body.startswith(b"--", part):
            break  # the closing delimiter
        head_end = body.find(b"\r\n\r\n", part)
        if head_end < 0:
            break
        value_start = head_end + 4
        end = body.find(b"\r\n" + delimiter, value_start)
        if end < 0:
            break
        if _is_model_field(body[part:head_end]):
            try:
                model = body[value_start:end].decode()
            except UnicodeDecodeError:
                raise ProxyError(400, "invalid_model", "`model` is not valid UTF-8") from None
            return model.strip(), (value_start, end)
        start = end + 2
    raise ProxyError(400, "missing_model", "multipart body has no `model` field")


def _is_model_field(head: bytes) -> bool:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-disposition:"):
            name = _NAME.search(line)
            return name is not None and name.group(1) == b"model"
    return False


def replace_value(body: bytes, span: tuple[int, int], value: str) -> bytes:
    return body[: span[0]] + value.encode() + body[span[1] :]
