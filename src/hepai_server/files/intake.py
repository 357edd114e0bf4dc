"""Intake: a multipart/form-data upload read as it arrives, its one file part into a Spool.

Starlette's form parser spools files to the system temp directory and cannot stop a file part
at a size limit; this reads the same wire format with the same parser (python-multipart), but
sends the file's bytes straight into a Spool, which refuses them past the limit, while the few
text fields (``purpose``) stay small.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from hepai_server.errors import InvalidRequest
from hepai_server.files.spool import Spool

#: What a file is for when its uploader does not say.
DEFAULT_PURPOSE = "user_data"
MAX_FIELDS = 16
MAX_FIELD_BYTES = 64 * 1024


@dataclass(slots=True)
class Form:
    """The text fields of the form and the name and claimed type of its file part."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    content_type: str | None = None


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidRequest("send the file as multipart/form-data")
    return options[b"boundary"]


async def read_form(
    stream: AsyncIterator[bytes], *, content_type: str, file_field: str, spool: Spool
) -> Form:
    """Parse the form from ``stream``; the part named ``file_field`` goes into ``spool``.

    Exactly one such file part must be present; any other file part is refused.
    """
    form = Form()
    part = _Part()
    header_name, header_value = bytearray(), bytearray()
    pending: list[bytes] = []
    seen_file = ended = False

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        part.headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal seen_file
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise InvalidRequest("a form part has no name")
        part.name = _decode(options[b"name"])
        if b"filename" in options:
            if part.name != file_field or seen_file:
                raise InvalidRequest(
                    f"send exactly one file, in the form field '{file_field}'", param=part.name
                )
            seen_file = part.is_file = True
            form.filename = _decode(options[b"filename"])
            claimed = part.headers.get(b"content-type")
            form.content_type = _decode(claimed) if claimed else None
        elif len(form.fields) >= MAX_FIELDS:
            raise InvalidRequest("too many form fields")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.is_file:
            pending.append(data[start:end])
            return
        part.data.extend(data[start:end])
        if len(part.data) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"the form field '{part.name}' is too long", param=part.name)

    def on_part_end() -> None:
        if not part.is_file:
            form.fields[part.name] = _decode(bytes(part.data))

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary_of(content_type),
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in stream:
            parser.write(chunk)
            for data in pending:
                await spool.write(data)
            pending.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidRequest(f"the multipart body is malformed: {exc}") from None
    if not ended:
        # A truncated body must not become a truncated file.
        raise InvalidRequest("the multipart body ended before its closing boundary")
    if not seen_file:
        raise InvalidRequest(f"the form has no file in the field '{file_field}'", param=file_field)
    return form
