"""The HepAIError tree: each class's status, type and code, its wire body, its documentation,
and what the official openai client makes of it."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from hepai_server import errors
from hepai_server.errors import HepAIError, InvalidRequest, ModelNotFound
from tests.inprocess import Account, App

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

#: class name -> (status, type, code, parent); the contract clients rely on.
EXPECTED: dict[str, tuple[int, str, str | None, str | None]] = {
    "HepAIError": (500, "server_error", None, None),
    "InvalidRequest": (400, "invalid_request_error", None, "HepAIError"),
    "ModelNotFound": (404, "invalid_request_error", "model_not_found", "InvalidRequest"),
    "MethodNotAllowed": (405, "invalid_request_error", None, "InvalidRequest"),
    "PayloadTooLarge": (413, "invalid_request_error", "payload_too_large", "InvalidRequest"),
    "QuotaExceeded": (413, "invalid_request_error", "storage_quota_exceeded", "PayloadTooLarge"),
    "RangeNotSatisfiable": (
        416,
        "invalid_request_error",
        "range_not_satisfiable",
        "InvalidRequest",
    ),
    "UnprocessableEntity": (422, "invalid_request_error", None, "InvalidRequest"),
    "AuthenticationFailed": (401, "authentication_error", "invalid_api_key", "HepAIError"),
    "PermissionDenied": (403, "permission_error", None, "HepAIError"),
    "AddressRefused": (403, "permission_error", "address_refused", "PermissionDenied"),
    "NotFound": (404, "not_found_error", None, "HepAIError"),
    "Conflict": (409, "conflict_error", None, "HepAIError"),
    "RateLimited": (429, "rate_limit_error", "rate_limit_exceeded", "HepAIError"),
    "InsufficientQuota": (429, "insufficient_quota", "insufficient_quota", "RateLimited"),
    "UpstreamError": (502, "upstream_error", None, "HepAIError"),
    "ServiceUnavailable": (503, "service_unavailable", "no_deployment_available", "HepAIError"),
    "DatabaseUnavailable": (
        503,
        "service_unavailable",
        "database_unavailable",
        "ServiceUnavailable",
    ),
    "StorageUnavailable": (503, "service_unavailable", "storage_unavailable", "ServiceUnavailable"),
    "UpstreamTimeout": (504, "timeout", None, "HepAIError"),
}


def error_classes() -> list[type[HepAIError]]:
    """Every HepAIError class the errors module defines."""
    return [
        value
        for _, value in inspect.getmembers(errors, inspect.isclass)
        if issubclass(value, HepAIError) and value.__module__ == errors.__name__
    ]


def exported_error_classes() -> list[type[HepAIError]]:
    classes = [getattr(errors, name) for name in errors.__all__]
    return [cls for cls in classes if isinstance(cls, type) and issubclass(cls, HepAIError)]


def make(cls: type[HepAIError], message: str = "it went wrong", **kwargs: Any) -> HepAIError:
    if cls is ModelNotFound:
        return ModelNotFound("some/model")
    return cls(message, **kwargs)


# --- the tree ------------------------------------------------------------------------------------


def test_all_is_sorted_and_complete() -> None:
    assert errors.__all__ == sorted(errors.__all__)
    assert len(set(errors.__all__)) == len(errors.__all__)
    assert all(hasattr(errors, name) for name in errors.__all__)
    assert {cls.__name__ for cls in error_classes()} == set(errors.__all__)


def test_every_error_class_has_an_expected_contract() -> None:
    assert {cls.__name__ for cls in exported_error_classes()} == set(EXPECTED)


@pytest.mark.parametrize("cls", exported_error_classes(), ids=lambda cls: cls.__name__)
def test_status_type_code_and_parent(cls: type[HepAIError]) -> None:
    status, type_, code, parent = EXPECTED[cls.__name__]
    assert (cls.status, cls.type, cls.code) == (status, type_, code)
    if parent is not None:
        assert cls.__bases__ == (getattr(errors, parent),)


@pytest.mark.parametrize("cls", exported_error_classes(), ids=lambda cls: cls.__name__)
def test_body_is_openai_error_with_detail(cls: type[HepAIError]) -> None:
    error = make(cls)
    body = error.to_body()
    assert set(body) == {"error", "detail"}
    assert body["error"] == {
        "message": error.message,
        "type": cls.type,
        "param": error.param,
        "code": cls.code,
    }
    assert body["detail"] == error.message == str(error)
    assert orjson.loads(error.to_json()) == body


@pytest.mark.parametrize(
    "cls",
    [cls for cls in exported_error_classes() if cls is not ModelNotFound],
    ids=lambda cls: cls.__name__,
)
def test_param_is_carried_and_defaults_to_none(cls: type[HepAIError]) -> None:
    assert cls("bad field").to_body()["error"]["param"] is None
    assert cls("bad field", param="max_tokens").to_body()["error"]["param"] == "max_tokens"


def test_model_not_found_names_the_model_in_param() -> None:
    error = ModelNotFound("some/model")
    assert isinstance(error, InvalidRequest)
    assert error.param == "model"
    assert "'some/model'" in error.message


def test_model_not_found_shortens_an_absurd_id() -> None:
    error = ModelNotFound("m" * 10_000)
    assert "m" * 200 + "…" in error.message
    assert "m" * 201 not in error.message
    assert len(error.message) < 300


def test_non_ascii_message_survives_the_wire() -> None:
    error = InvalidRequest("模型 'x' 不存在 \x00 \u2028", param="model")
    assert orjson.loads(error.to_json())["error"]["message"] == error.message


# --- the documentation ---------------------------------------------------------------------------


def documented_rows() -> dict[str, list[str]]:
    """docs/errors.md's table rows, keyed by the `ClassName` in their first cell."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if line.startswith("|") else None
        if match:
            rows[match.group(1)] = cells
    return rows


@pytest.mark.parametrize("cls", exported_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_class_is_documented(cls: type[HepAIError]) -> None:
    rows = documented_rows()
    assert cls.__name__ in rows, f"{cls.__name__} is missing from {DOCS}"
    _, status, type_, code, when, advice = rows[cls.__name__]
    assert status == str(cls.status)
    assert type_ == f"`{cls.type}`"
    assert code == (f"`{cls.code}`" if cls.code else "—")
    assert when and advice


def test_docs_list_no_class_that_does_not_exist() -> None:
    assert set(documented_rows()) <= set(errors.__all__)


def test_docs_describe_the_in_stream_error_event() -> None:
    text = DOCS.read_text()
    assert "## The in-stream error event" in text
    assert "data: [DONE]" in text


# --- the official openai client -----------------------------------------------------------------


def chat(model: str = "mock/chat", content: str = "hi", **extra: Any) -> Callable[..., Any]:
    async def call(api: openai.AsyncOpenAI) -> Any:
        return await api.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], **extra
        )

    return call


@pytest.mark.parametrize(
    ("call", "bad_key", "exception", "status", "type_", "code"),
    [
        (chat(n=0), False, openai.BadRequestError, 400, "invalid_request_error", None),
        (chat(), True, openai.AuthenticationError, 401, "authentication_error", "invalid_api_key"),
        (
            chat("no-such/model"),
            False,
            openai.NotFoundError,
            404,
            "invalid_request_error",
            "model_not_found",
        ),
        (
            chat(content="x" * (33 * 1024 * 1024)),
            False,
            openai.APIStatusError,
            413,
            "invalid_request_error",
            "payload_too_large",
        ),
        (
            chat("failover/all-failing"),
            False,
            openai.InternalServerError,
            502,
            "upstream_error",
            None,
        ),
    ],
    ids=["400", "401", "404", "413", "502"],
)
async def test_openai_client_raises_the_typed_exception_for_each_status(
    app: App,
    account: Account,
    call: Callable[[openai.AsyncOpenAI], Awaitable[Any]],
    bad_key: bool,
    exception: type[openai.APIStatusError],
    status: int,
    type_: str,
    code: str | None,
) -> None:
    key = "sk-not-a-real-key-0000000000000000" if bad_key else account.key
    async with app.openai(key) as api:
        with pytest.raises(openai.APIStatusError) as caught:
            await call(api)
    assert type(caught.value) is exception
    assert caught.value.status_code == status
    assert (caught.value.type, caught.value.code) == (type_, code)
    body = caught.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert body["message"] in caught.value.message


async def test_openai_client_raises_on_the_in_stream_error_event(api: openai.AsyncOpenAI) -> None:
    stream = await api.chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_body={"mock": {"break_after": 2}},
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.append(chunk)
    assert not isinstance(caught.value, openai.APIStatusError)
    assert len(received) == 2
    assert caught.value.type == "upstream_error"
