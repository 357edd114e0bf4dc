"""A multipart/form-data upload (audio to transcribe, images to edit) passed on to the upstream
as it arrives, with its ``model`` field naming the upstream's model.

The gateway must know the model before it can choose an upstream, and clients put the form's
fields where they like (the openai client sends them before the file). So the body is read
only until its ``model`` field has gone by: what came before it is re-encoded into a spool
(memory, then disk past a few megabytes), and each attempt at an upstream sends a ``model``
part of its own, the spool, and then the rest of the body straight from the client as it
arrives, part by part, never held whole. An attempt that fails before the rest began is
retried on the next deployment from the spool; after that, there is no going back.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from hepai_server.errors import InvalidRequest, PayloadTooLarge
from hepai_server.gateway.asgi import ClientDisconnected, Receive

#: The spool stays in memory up to this size, then moves to disk.
SPOOL_IN_MEMORY = 4 * 1024 * 1024
PIECE = 256 * 1024
#: Largest value of a field that is not a file (the model, the prompt, the language...).
MAX_FIELD = 64 * 1024


class FormStream:
    """One multipart request body on its way through: its fields (all but files) as far as they
    have been read, and the body for an upstream, re-encoded with a model of its choosing."""

    def __init__(self, content_type: bytes, receive: Receive, *, limit: int) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidRequest("the request must be multipart/form-data with a boundary")
        self.boundary = boundary
        self._receive = receive
        self._limit = limit
        self._size = 0
        self._more = True  # the client has more body to send
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )
        #: Every field read so far that is not a file: name → value.
        self.fields: dict[str, str] = {}
        #: The files read so far: field name → file name.
        self.files: dict[str, str] = {}
        # Closed by close(), which the relay calls when the request ends.
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)  # noqa: SIM115
        self._out: list[bytes] = []  # re-encoded bytes waiting to be written or sent
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._is_file = False
        self._skip = False
        self._text = bytearray()
        #: The rest of the body has started to go to an upstream: no other attempt can be made.
        self.committed = False

    @property
    def content_type(self) -> str:
        return "multipart/form-data; boundary=" + self.boundary.decode("latin-1")

    async def read_until_model(self) -> str:
        """Read the body until its ``model`` field has gone by (or it ended); the model."""
        while "model" not in self.fields and self._more:
            await self._read()
            self._flush_to_spool()
        model = self.fields.get("model")
        if not model:
            raise InvalidRequest("'model' is required", param="model")
        return model

    async def body(self, model: str) -> AsyncIterator[bytes]:
        """The body as one upstream gets it: its model, what has been read, then the rest."""
        yield self._part_header(b'form-data; name="model"') + model.encode() + b"\r\n"
        self._spool.seek(0)
        while piece := self._spool.read(PIECE):
            yield piece
        while self._more:
            self.committed = True
            await self._read()
            if self._out:
                yield b"".join(self._out)
                self._out.clear()
        yield b"--" + self.boundary + b"--\r\n"

    @property
    def replayable(self) -> bool:
        return not self.committed

    def close(self) -> None:
        self._spool.close()

    async def _read(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        self._more = bool(message.get("more_body", False))
        self._size += len(chunk)
        if self._size > self._limit:
            raise PayloadTooLarge(f"request body exceeds the {self._limit}-byte limit")
        try:
            self._parser.write(chunk)
            if not self._more:
                self._parser.finalize()
        except FormParserError as exc:
            raise InvalidRequest(f"the multipart body is malformed: {exc}") from None

    def _flush_to_spool(self) -> None:
        for piece in self._out:
            self._spool.write(piece)
        self._out.clear()

    def _part_header(self, disposition: bytes) -> bytes:
        return b"--" + self.boundary + b"\r\ncontent-disposition: " + disposition + b"\r\n\r\n"

    # --- the parser's callbacks ------------------------------------------------------------

    def _part_begin(self) -> None:
        self._headers, self._name, self._is_file, self._skip = [], None, False, False
        self._text = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((self._field, self._value))
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        for field, value in self._headers:
            if field.lower() == b"content-disposition":
                _kind, options = parse_options_header(value)
                name = options.get(b"name")
                self._name = name.decode("utf-8", "replace") if name is not None else None
                filename = options.get(b"filename")
                if filename is not None:
                    self._is_file = True
                    self.files[self._name or ""] = filename.decode("utf-8", "replace")
        # The client's model part is replaced by each attempt's own.
        self._skip = self._name == "model" and not self._is_file
        if not self._skip:
            head = b"".join(f + b": " + v + b"\r\n" for f, v in self._headers)
            self._out.append(b"--" + self.boundary + b"\r\n" + head + b"\r\n")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if not self._is_file and self._name is not None:
            if len(self._text) + len(piece) > MAX_FIELD:
                raise InvalidRequest(f"the form field {self._name!r} is too long", param="form")
            self._text += piece
        if not self._skip:
            self._out.append(piece)

    def _part_end(self) -> None:
        if not self._is_file and self._name is not None:
            self.fields[self._name] = self._text.decode("utf-8", "replace")
        if not self._skip:
            self._out.append(b"\r\n")
