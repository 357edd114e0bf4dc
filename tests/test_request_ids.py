"""Request ids: ``req-`` and hex digits, unique within a process, across processes, after fork."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from hepai_server.gateway.asgi import client_request_id, new_request_id

FORMAT = re.compile(r"req-[0-9a-f]{24}")


def test_ids_keep_their_format_and_never_repeat() -> None:
    ids = [new_request_id() for _ in range(1000)]
    assert all(FORMAT.fullmatch(request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)
    # A client's own id is kept beside the platform's when it is a sane token.
    assert client_request_id(b"mine-1") == "mine-1"
    assert client_request_id(None) is None and client_request_id(b"a b") is None


def test_another_process_draws_another_prefix() -> None:
    code = "from hepai_server.gateway.asgi import new_request_id; print(new_request_id())"
    theirs = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert FORMAT.fullmatch(theirs) and theirs[:18] != new_request_id()[:18]


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, just its next id
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    mine = new_request_id()
    assert FORMAT.fullmatch(child) and child[:18] != mine[:18]
