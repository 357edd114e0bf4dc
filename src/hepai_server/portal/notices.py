"""What the portal says about a refused request, in the viewer's language.

The services raise errors with English messages for the API's clients; a page shows the
catalog's message for the error instead, chosen by the field it names (``param``) and its
status, so a Chinese page never shows an English sentence from the server.
"""

from __future__ import annotations

from hepai_server.errors import Conflict, HepAIError

#: The message for an error about one field, by the field's name.
BY_PARAM = {
    "username": "errors.username",
    "password": "errors.password",
    "email": "errors.email",
    "level": "errors.level",
    "group": "errors.group",
    "groups": "errors.groups",
    "users": "errors.groups",
    "name": "errors.provider_name",
    "base_url": "errors.base_url",
    "models": "errors.models",
    "model": "errors.model",
    "action": "errors.action",
    "csrf_token": "errors.form_expired",
    "origin": "errors.other_site",
    "from": "errors.dates",
    "to": "errors.dates",
}
#: A conflict names what already exists.
CONFLICTS = {
    "username": "errors.username_taken",
    "name": "errors.provider_taken",
    "models": "errors.model_taken",
}
BY_STATUS = {
    400: "errors.bad_request",
    401: "errors.sign_in",
    403: "errors.forbidden",
    404: "errors.not_found",
    405: "errors.not_found",
    409: "errors.conflict",
    413: "errors.too_large",
    429: "errors.too_many",
}


def describe(error: HepAIError) -> str:
    """The catalog key of the message a page shows for ``error``."""
    if isinstance(error, Conflict) and error.param in CONFLICTS:
        return CONFLICTS[error.param]
    if error.param in BY_PARAM and error.status < 500:
        return BY_PARAM[error.param]
    if error.status >= 500:
        return "errors.server"
    return BY_STATUS.get(error.status, "errors.bad_request")


def every_key() -> set[str]:
    """Every key ``describe`` may answer (the catalog test checks both languages have them)."""
    return {*BY_PARAM.values(), *CONFLICTS.values(), *BY_STATUS.values(), "errors.server"}
