"""The HepAIError tree: every error the platform raises on purpose, and its wire body.

    HepAIError (500 server_error)
    ├── InvalidRequest (400 invalid_request_error)
    │   ├── ModelNotFound (404, code model_not_found)
    │   ├── MethodNotAllowed (405)
    │   ├── PayloadTooLarge (413, code payload_too_large)
    │   │   └── QuotaExceeded (413, code storage_quota_exceeded)
    │   ├── RangeNotSatisfiable (416, code range_not_satisfiable)
    │   └── UnprocessableEntity (422)
    ├── AuthenticationFailed (401 authentication_error, code invalid_api_key)
    ├── PermissionDenied (403 permission_error)
    │   └── AddressRefused (403, code address_refused)
    ├── NotFound (404 not_found_error)
    ├── Conflict (409 conflict_error)
    ├── RateLimited (429 rate_limit_error)
    │   └── InsufficientQuota (429 insufficient_quota)
    ├── UpstreamError (502 upstream_error)
    ├── ServiceUnavailable (503 service_unavailable)
    │   ├── DatabaseUnavailable (503, code database_unavailable)
    │   └── StorageUnavailable (503, code storage_unavailable)
    └── UpstreamTimeout (504 timeout)

The status lives on the class, and so does ``retry_after``: the seconds a client should wait
before trying again, sent as ``Retry-After`` when set. The body is OpenAI's
``{"error": {message, type, param, code}}`` with a ``detail`` string beside it, which the hepai
client reads.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

__all__ = [
    "AddressRefused",
    "AuthenticationFailed",
    "Conflict",
    "DatabaseUnavailable",
    "HepAIError",
    "InsufficientQuota",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "QuotaExceeded",
    "RangeNotSatisfiable",
    "RateLimited",
    "ServiceUnavailable",
    "StorageUnavailable",
    "UnprocessableEntity",
    "UpstreamError",
    "UpstreamTimeout",
]


class HepAIError(Exception):
    """Base of every error raised on purpose; carries its OpenAI error fields."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None
    #: Seconds to wait before retrying, sent as ``Retry-After``; None sends no header.
    retry_after: ClassVar[int | None] = None

    #: Headers the answer carries beside the body (Retry-After and the rate-limit headers of a
    #: 429); None for none.
    headers: dict[str, str] | None = None

    def __init__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if headers is not None:
            self.headers = headers

    def to_body(self) -> dict[str, Any]:
        error = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        return {"error": error, "detail": self.message}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_body())


class InvalidRequest(HepAIError):
    status, type = 400, "invalid_request_error"


class ModelNotFound(InvalidRequest):
    status, code = 404, "model_not_found"

    def __init__(self, model: str) -> None:
        shown = model if len(model) <= 200 else model[:200] + "…"
        super().__init__(
            f"The model '{shown}' does not exist or you do not have access to it.",
            param="model",
        )


class MethodNotAllowed(InvalidRequest):
    status = 405


class PayloadTooLarge(InvalidRequest):
    status, code = 413, "payload_too_large"


class QuotaExceeded(PayloadTooLarge):
    code = "storage_quota_exceeded"


class RangeNotSatisfiable(InvalidRequest):
    status, code = 416, "range_not_satisfiable"


class UnprocessableEntity(InvalidRequest):
    status = 422


class AuthenticationFailed(HepAIError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class PermissionDenied(HepAIError):
    status, type = 403, "permission_error"


class AddressRefused(PermissionDenied):
    """An address the platform will not connect to on a user's behalf (the egress guard)."""

    code = "address_refused"


class NotFound(HepAIError):
    status, type = 404, "not_found_error"


class Conflict(HepAIError):
    status, type = 409, "conflict_error"


class RateLimited(HepAIError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class InsufficientQuota(RateLimited):
    """A budget is spent: OpenAI's "You exceeded your current quota" (429, insufficient_quota),
    answered before any upstream is called."""

    type, code = "insufficient_quota", "insufficient_quota"


class UpstreamError(HepAIError):
    status, type = 502, "upstream_error"


class ServiceUnavailable(HepAIError):
    status, type, code = 503, "service_unavailable", "no_deployment_available"


class DatabaseUnavailable(ServiceUnavailable):
    """The database did not answer in time (refused, hung, or every pooled connection busy)."""

    code, retry_after = "database_unavailable", 5


class StorageUnavailable(ServiceUnavailable):
    code = "storage_unavailable"


class UpstreamTimeout(HepAIError):
    status, type = 504, "timeout"
