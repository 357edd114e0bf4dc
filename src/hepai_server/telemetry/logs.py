"""Log records as text or JSON lines, each stamped with the id of the request it belongs to.

The request id lives in a context variable that the request's frame sets; asyncio copies the
context into every task and ``to_thread`` call the request starts, so a line logged anywhere on
its behalf carries the id.
"""

from __future__ import annotations

import logging
import time
import traceback
from contextvars import ContextVar

import orjson

#: The id of the request being served in this context, or None outside a request.
REQUEST_ID: ContextVar[str | None] = ContextVar("hepai_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s%(request)s: %(message)s"


class RequestStamp(logging.Filter):
    """Adds ``request`` (" req-…", or empty) and ``request_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        record.request_id = request_id
        record.request = f" {request_id}" if request_id else ""
        return True


class JSONLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, process, request_id and,
    for an exception, its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return orjson.dumps(line, default=str).decode()


def configure(*, level: str, json: bool) -> None:
    """Send every record to stderr, as text or JSON lines, unless logging is set up already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.addFilter(RequestStamp())
    handler.setFormatter(JSONLines() if json else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
