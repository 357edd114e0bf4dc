"""hepai-server: the HepAI model and tool API platform."""

from hepai_server.errors import (
    AuthenticationFailed,
    Conflict,
    HepAIError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    UnprocessableEntity,
    UpstreamError,
    UpstreamTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "Conflict",
    "HepAIError",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "ServiceUnavailable",
    "UnprocessableEntity",
    "UpstreamError",
    "UpstreamTimeout",
    "__version__",
]
