"""The Batch API's wire formats: the input file's lines as they are checked, the output and
error files' lines, and the Batch object. Plain values, no I/O.

An input line is ``{"custom_id", "method": "POST", "url", "body"}``. A file with any line
that cannot be run as written (not JSON, a missing or duplicate ``custom_id``, another method or
URL than the batch's endpoint, no model) fails the whole batch at validation, with OpenAI's
``errors`` list naming each line (numbered from 1); so does one with more lines than the
platform takes. A line that asks to stream is refused by itself, as its own answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from hepai_server.errors import InvalidRequest

#: The endpoints a batch may name, and the name usage rows give each.
ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}
#: The completion windows a batch may ask for, in seconds (OpenAI takes only 24h).
COMPLETION_WINDOWS = {"24h": 24 * 3600}
#: Validation errors kept for one batch: enough to fix a file, not a copy of it.
MAX_ERRORS = 100
#: What the statuses a batch ends in are.
FINAL = frozenset({"failed", "completed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class Line:
    """One request of an input file: its number (from 0), its id and its body."""

    index: int
    custom_id: str
    body: dict[str, Any]
    model: str


def error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> dict[str, Any]:
    """One entry of a batch's ``errors.data``; ``line`` counts from 1, as editors do."""
    return {"code": code, "message": message, "line": line, "param": param}


def parse_lines(raw: bytes, *, endpoint: str, max_lines: int) -> tuple[list[Line], list[Any]]:
    """The input file's lines, or the errors that fail the batch (the lines are then of no
    use); blank lines are skipped."""
    lines: list[Line] = []
    errors: list[Any] = []
    seen: set[str] = set()
    rows = raw.splitlines()
    for number, text in enumerate(rows, 1):
        if len(errors) >= MAX_ERRORS:
            break
        if not text.strip():
            continue
        if len(lines) >= max_lines:
            errors.append(
                error(
                    "too_many_tasks",
                    f"the file has more than {max_lines} requests, the most one batch takes; "
                    "split it into several batches",
                    number,
                )
            )
            break
        checked = check_line(text, number, endpoint=endpoint)
        if isinstance(checked, dict):
            errors.append(checked)
            continue
        custom_id, body = checked
        if custom_id in seen:
            errors.append(
                error(
                    "duplicate_custom_id",
                    f"custom_id {custom_id!r} is used by an earlier line; each line needs its own",
                    number,
                    "custom_id",
                )
            )
            continue
        seen.add(custom_id)
        lines.append(Line(len(lines), custom_id, body, str(body["model"])))
    if not lines and not errors:
        errors.append(error("empty_file", "the file has no requests"))
    return lines, errors


def check_line(
    text: bytes, number: int, *, endpoint: str
) -> tuple[str, dict[str, Any]] | dict[str, Any]:
    """A line's custom_id and body, or the error it fails validation with."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return error("invalid_json_line", "the line is not a JSON object", number)
    if not isinstance(value, dict):
        return error("invalid_json_line", "the line is not a JSON object", number)
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
        return error(
            "missing_required_parameter",
            "each line needs a custom_id: a string of 1 to 512 characters",
            number,
            "custom_id",
        )
    if value.get("method") != "POST":
        return error("invalid_method", "the method must be POST", number, "method")
    url = value.get("url")
    if url != endpoint:
        return error(
            "invalid_url",
            f"the url must be the batch's endpoint, {endpoint}, not {url!r}",
            number,
            "url",
        )
    body = value.get("body")
    if not isinstance(body, dict):
        return error(
            "missing_required_parameter", "the line needs a body: a JSON object", number, "body"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error("missing_required_parameter", "the body needs a model", number, "body.model")
    return custom_id, body


def refusal(body: dict[str, Any]) -> InvalidRequest | None:
    """Why a line's request is answered with an error without being run, if it is."""
    if body.get("stream"):
        return InvalidRequest(
            "streaming is not available in a batch; leave 'stream' out", param="stream"
        )
    return None


def request_id(batch_id: str, index: int) -> str:
    """The request id of a line's call and usage row: the same whichever run answers it, so
    the ledger (unique by request id) bills it once."""
    return f"{batch_id}-{index}"


def output_line(
    *,
    batch_id: str,
    index: int,
    custom_id: str,
    status_code: int | None,
    body: Any,
    failure: dict[str, Any] | None,
) -> bytes:
    """A line of the output or error file: the answer (status, request id, body), or, for a
    line that got none, the error that kept it from one."""
    rid = request_id(batch_id, index)
    line = {
        "id": "batch_req_" + hashlib.sha256(rid.encode()).hexdigest()[:32],
        "custom_id": custom_id,
        "response": (
            {"status_code": status_code, "request_id": rid, "body": body}
            if status_code is not None
            else None
        ),
        "error": failure,
    }
    return orjson.dumps(line) + b"\n"


def check_metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's metadata: up to 16 pairs, keys up to 64 characters, values up to 512."""
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > 16
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise InvalidRequest(
            "metadata is up to 16 string pairs, keys up to 64 and values up to 512 characters",
            param="metadata",
        )
    return dict(value)
