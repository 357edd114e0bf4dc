"""What if request ids were a per-process random prefix and a counter?

Today each request without an X-Request-ID costs a getrandom(2) call via secrets.token_hex.
"""

from __future__ import annotations

import itertools
import secrets

from hepai_server.gateway import asgi

_PREFIX = "req-" + secrets.token_hex(6)
_COUNT = itertools.count()


def _counted_request_id() -> str:
    return f"{_PREFIX}{next(_COUNT):012x}"


asgi.new_request_id = _counted_request_id
