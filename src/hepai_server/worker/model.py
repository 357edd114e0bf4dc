"""The worker base class, the @remote decorator, and what a remote call knows about its caller."""

from __future__ import annotations

import inspect
import json
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
FILE_ID = re.compile(r"^file-[0-9a-f]{32}$")

#: Methods every worker answers, as the hepai SDK's workers do.
BUILTINS = ("__call__", "get_register_functions", "hello_world")


def remote(function: F) -> F:
    """Mark a method as callable through the platform. It may return a value, or be a
    (sync or async) generator to stream: each item goes out as one chunk."""
    function.__hepai_remote__ = True  # type: ignore[attr-defined]
    return function


class TooLarge(ValueError):
    """Raise it from a remote method for input over a size limit: the caller gets 413."""


class UpstreamFailed(RuntimeError):
    """Raise it when a service the method relies on answered with a failure: the caller gets
    502. (One that cannot be reached is a ConnectionError: 503, which clients retry.)"""


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling, as the platform vouches for it in the request headers."""

    user_id: str | None
    username: str | None
    email: str | None
    api_key_id: str | None
    request_id: str | None
    #: The platform's grant to read the files this call names (X-HepAI-File-Grant).
    file_grant: str | None = None
    #: The platform's API base URL (…/apiv2), where those files are read from.
    platform_url: str | None = None
    #: What the call consumed, as the method reports it (see report_usage).
    usage: dict[str, int] = field(default_factory=dict)

    def store_file(
        self, content: bytes, filename: str, *, purpose: str = "user_data", timeout: float = 300
    ) -> dict[str, Any]:
        """Store a result as a platform file of the caller (within their quota); the
        FileObject, whose ``id`` the caller can download. Needs the call's file grant."""
        if not self.file_grant or not self.platform_url:
            raise PermissionError("this call carries no grant to store files for its caller")
        boundary = secrets.token_hex(16)
        quoted = filename.replace('"', "%22").replace("\r", "").replace("\n", "")
        body = b"".join(
            [
                f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
                f"{purpose}\r\n".encode(),
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{quoted}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode(),
                content,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        request = urllib.request.Request(
            f"{self.platform_url}/files",
            data=body,
            method="POST",
            headers={
                "authorization": f"Bearer {self.file_grant}",
                "content-type": f"multipart/form-data; boundary={boundary}",
            },
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            stored: dict[str, Any] = json.loads(response.read())
        return stored

    def report_usage(
        self, *, pages: int | None = None, bytes: int | None = None, tokens: int | None = None
    ) -> None:
        """Tell the platform what this call consumed; it lands in the caller's usage records."""
        for name, value in (("pages", pages), ("bytes", bytes), ("tokens", tokens)):
            if value is not None:
                self.usage[name] = self.usage.get(name, 0) + value

    def file_info(self, file_id: str, *, timeout: float = 30) -> dict[str, Any]:
        """The FileObject (name, size…) of a platform file the caller passed to this call."""
        info: dict[str, Any] = json.loads(self._get(f"/files/{file_id}", file_id, timeout))
        return info

    def read_file(self, file_id: str, *, timeout: float = 300) -> bytes:
        """The bytes of a platform file the caller passed to this call, read as the caller.

        FileNotFoundError if the file does not exist or is not the caller's; PermissionError
        if the call did not name it (or its grant expired).
        """
        return self._get(f"/files/{file_id}/content", file_id, timeout)

    def _get(self, path: str, file_id: str, timeout: float) -> bytes:
        if not self.file_grant or not self.platform_url:
            raise PermissionError(f"this call carries no grant to read {file_id}")
        if not FILE_ID.match(file_id):
            raise FileNotFoundError(f"not a file id: {file_id!r}")
        request = urllib.request.Request(
            f"{self.platform_url}{path}",
            headers={"authorization": f"Bearer {self.file_grant}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(f"no file {file_id} of the caller") from None
            if exc.code in (401, 403):
                raise PermissionError(f"the platform refused to read {file_id}") from None
            raise


_current: ContextVar[CallContext | None] = ContextVar("hepai_worker_call", default=None)


def current_call() -> CallContext | None:
    """The caller of the remote method running now (None outside a remote call)."""
    return _current.get()


def set_current_call(context: CallContext) -> Any:
    return _current.set(context)


class Worker:
    """Subclass, name it, and decorate the methods others may call with @remote.

    ``name`` is the model id others call (``owner/model``); ``permission`` says who may call
    it besides its owner, in the hepai form ``"groups: physics, all; users: alice"``.
    """

    # Plain attributes, not ClassVars: a configurable worker (the built-in ones) sets them
    # per instance from its settings.
    name: str = ""
    permission: str = ""
    description: ClassVar[str] = ""
    #: Calls running at once; more wait their turn.
    concurrency: ClassVar[int] = 16

    def on_start(self, worker_id: str) -> None:
        """Called once the worker's id is known, before it registers: a worker that keeps
        state on disk (the task journal of hepai/mineru) keeps it under that id."""

    def on_stop(self) -> None:
        """Called as the worker shuts down, before it leaves the platform: end background
        work (a task's conversion) so the process can exit."""

    def remote_functions(self) -> dict[str, Callable[..., Any]]:
        functions = {
            name: getattr(self, name)
            for name, member in inspect.getmembers(type(self))
            if getattr(member, "__hepai_remote__", False)
        }
        functions["__call__"] = self.__call__
        functions["hello_world"] = self.hello_world
        functions["get_register_functions"] = self.get_register_functions
        return dict(sorted(functions.items()))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return f"{self.name} is a worker; call one of its methods"

    def hello_world(self) -> str:
        return f"Hello world from {self.name}"

    def get_register_functions(self) -> list[dict[str, Any]]:
        """The remote methods as agent frameworks read them: name, doc, signature, return."""
        rows = []
        for name, function in self.remote_functions().items():
            if name in BUILTINS:
                continue
            signature = inspect.signature(function)
            rows.append(
                {
                    "__name__": name,
                    "__doc__": inspect.getdoc(function),
                    "__signature__": [
                        {
                            "name": parameter.name,
                            "type": _type_name(parameter.annotation),
                            "default": None
                            if parameter.default is inspect.Parameter.empty
                            else parameter.default,
                        }
                        for parameter in signature.parameters.values()
                        if parameter.kind
                        not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                    ],
                    "__return__": _type_name(signature.return_annotation),
                }
            )
        return rows


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "Any"
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def parse_permission(text: str) -> dict[str, Any]:
    """``"groups: a, b; users: c"`` → ``{"groups": ["a", "b"], "users": ["c"]}``."""
    parsed: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, names = part.partition(":")
        key = key.strip()
        if key not in ("groups", "users", "owner"):
            raise ValueError(f"unknown permission key {key!r} (groups, users or owner)")
        values = [name.strip() for name in names.split(",") if name.strip()]
        parsed[key] = values[0] if key == "owner" and values else values
    return parsed
