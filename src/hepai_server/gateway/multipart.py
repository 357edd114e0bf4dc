"""hepai SDK multipart calls, turned into the JSON body workers accept (wire spec §2.6).

When a remote call has a ``file`` kwarg, the SDK sends multipart/form-data: every other
argument flattened into bracket keys (``args[]``, ``kwargs[k]``, ``kwargs[k][]``,
``kwargs[k][j]``), all values as strings, plus a ``file`` part. Workers take JSON only, so the
gate rebuilds ``args``/``kwargs`` and passes the files as
``kwargs["_hepai_multipart"] = {"version": 1, "files": [{field, filename, content_type, size,
content_base64}]}``, the envelope hepai's own workers read. The file is spooled to disk and
encoded in pieces, never held whole in memory.
"""

from __future__ import annotations

import base64
import re
from typing import IO, Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request

from hepai_server.errors import InvalidRequest, PayloadTooLarge
from hepai_server.gateway.asgi import Message, Receive, Scope

ENVELOPE = "_hepai_multipart"
#: A multiple of 3, so base64 pieces join without padding in between.
PIECE = 3 * 256 * 1024
#: How deep a field name may nest (``kwargs[a][b]…``): far less than the JSON encoder allows.
MAX_DEPTH = 32
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def is_multipart(content_type: bytes) -> bool:
    return content_type.startswith(b"multipart/form-data")


async def multipart_to_json(scope: Scope, receive: Receive, sink: IO[bytes], *, limit: int) -> None:
    """Read the multipart body from the client and write the worker's JSON body to ``sink``."""
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        return message

    form = await Request(scope, counted).form(max_files=16, max_fields=10_000)
    try:
        payload: dict[str, Any] = {"args": [], "kwargs": {}}
        files: list[tuple[str, UploadFile]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((key, value))
            else:
                place(payload, key, value)
        write_body(sink, payload, files)
    finally:
        await form.close()


def place(payload: dict[str, Any], key: str, value: str) -> None:
    """Put one flattened field back where it came from: ``kwargs[a][]`` appends to a list."""
    match = _KEY.match(key)
    if match is None or match.group(1) not in ("args", "kwargs"):
        raise InvalidRequest(f"unexpected form field {key!r}", param=key)
    path = re.findall(r"\[([^\[\]]*)\]", match.group(2))
    if len(path) > MAX_DEPTH:
        raise InvalidRequest(f"form field {key[:64]!r} nests too deeply", param="form")
    node: Any = payload[match.group(1)]
    if match.group(1) == "args" and not path:
        raise InvalidRequest("args must be sent as args[]", param=key)
    for position, part in enumerate(path):
        last = position == len(path) - 1
        if isinstance(node, list):
            if part != "":
                raise InvalidRequest(f"unexpected form field {key!r}", param=key)
            if last:
                node.append(value)
            else:
                node.append({} if path[position + 1] else [])
                node = node[-1]
        else:
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, [] if path[position + 1] == "" else {})
                if not isinstance(node, dict | list):
                    raise InvalidRequest(f"conflicting form fields at {key!r}", param=key)


def write_body(
    sink: IO[bytes], payload: dict[str, Any], files: list[tuple[str, UploadFile]]
) -> None:
    """``payload`` as JSON with the files' envelope added to its kwargs, streamed to ``sink``."""
    if not files:
        sink.write(orjson.dumps(payload))
        return
    kwargs = payload["kwargs"]
    head = orjson.dumps({"args": payload["args"], "kwargs": {**kwargs, ENVELOPE: None}})
    # The envelope goes where the placeholder `null` closes the kwargs object.
    placeholder = b'"' + ENVELOPE.encode() + b'":null}}'
    assert head.endswith(placeholder)
    sink.write(head[: -len(placeholder)] + b'"' + ENVELOPE.encode() + b'":{"version":1,"files":[')
    for index, (field, upload) in enumerate(files):
        upload.file.seek(0, 2)
        size = upload.file.tell()
        upload.file.seek(0)
        meta = orjson.dumps(
            {
                "field": field,
                "filename": upload.filename,
                "content_type": upload.content_type,
                "size": size,
            }
        )
        sink.write((b"," if index else b"") + meta[:-1] + b',"content_base64":"')
        while piece := upload.file.read(PIECE):
            sink.write(base64.b64encode(piece))
        sink.write(b'"}')
    sink.write(b"]}}}")
