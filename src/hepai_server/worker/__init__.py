"""Serve a Python object as a DDF worker: decorate its methods with @remote, run it with
`hepai-server worker run module:Class --controller URL`, call it with the hepai client."""

from hepai_server.worker.model import (
    CallContext,
    TooLarge,
    UpstreamFailed,
    Worker,
    current_call,
    remote,
)

__all__ = ["CallContext", "TooLarge", "UpstreamFailed", "Worker", "current_call", "remote"]
