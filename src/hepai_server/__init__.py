"""hepai-server: the HepAI model and tool API platform."""

from hepai_server.errors import (
    AddressRefused,
    AuthenticationFailed,
    Conflict,
    HepAIError,
    InsufficientQuota,
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
    "AddressRefused",
    "AuthenticationFailed",
    "Conflict",
    "HepAIError",
    "InsufficientQuota",
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
