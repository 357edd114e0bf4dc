"""Admin → workers: the live list, and a stop that holds even for a worker that keeps sending
heartbeats, until an admin lets it back."""

from __future__ import annotations

import ast
import html
import json
import re
import shlex
import time
from collections.abc import Callable
from urllib.parse import quote

from tests.portal import Visitor
from tests.stack import Platform, Server, hepai_worker, our_worker
from tests.test_ddf import model_ids


def worker_row(visitor: Visitor, model: str) -> tuple[str, str]:
    """The id and state of the worker serving ``model`` on the workers page."""
    page = visitor.get("/admin/workers").text
    for row in re.findall(r"<tr data-worker=.*?</tr>", page, flags=re.S):
        if model in row:
            found = re.search(r'data-worker="([^"]+)" data-state="([^"]+)"', row)
            assert found
            return found.group(1), found.group(2)
    raise AssertionError(f"{model} is not on the workers page")


def wait_for_state(visitor: Visitor, model: str, state: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        worker_id, found = worker_row(visitor, model)
        if found == state:
            return worker_id
        assert time.monotonic() < deadline, f"{model} stayed {found}, not {state}"
        time.sleep(0.2)


def test_a_stopped_worker_stays_stopped_until_an_admin_lets_it_back(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    owner, admin = unique("worker-owner"), unique("worker-admin")
    key = platform.create_user(owner)
    platform.create_user(admin, "--admin")
    name = f"{owner}/calculator"
    with our_worker(server, key, name, heartbeat=0.5), Visitor(server.url) as visitor:
        visitor.sign_in(admin)
        worker_id = wait_for_state(visitor, name, "live")
        page = visitor.get("/admin/workers").text
        assert owner in page and "s ago" in page

        stopped = visitor.submit(
            "/admin/workers", "/admin/workers", {"worker_id": worker_id, "action": "stop"}
        )
        assert stopped.status_code == 303
        time.sleep(2)  # four heartbeats, each refused
        assert worker_row(visitor, name) == (worker_id, "held")
        assert name not in model_ids(server, key)
        audit = visitor.get("/admin/audit").text
        assert re.search(rf'data-action="worker.stop">.*?{worker_id}', audit, flags=re.S)

        visitor.submit(
            "/admin/workers", "/admin/workers", {"worker_id": worker_id, "action": "release"}
        )
        wait_for_state(visitor, name, "live")
        assert name in model_ids(server, key)


def test_stopping_a_hepai_worker_shuts_its_process_down(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    owner, admin = unique("sdk-owner"), unique("sdk-admin")
    key = platform.create_user(owner)
    platform.create_user(admin, "--admin")
    name = f"{owner}/calculator"
    with hepai_worker(server, key, name) as process, Visitor(server.url) as visitor:
        visitor.sign_in(admin)
        worker_id = wait_for_state(visitor, name, "live")
        visitor.submit(
            "/admin/workers", "/admin/workers", {"worker_id": worker_id, "action": "stop"}
        )
        assert process.wait(20) is not None, "the worker process exits"
        assert worker_row(visitor, name) == (worker_id, "held")


def test_only_admins_see_and_stop_workers(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    member = unique("worker-member")
    platform.create_user(member)
    with Visitor(server.url) as visitor:
        visitor.sign_in(member)
        assert visitor.get("/admin/workers").status_code == 403
        refused = visitor.submit(
            "/settings/keys", "/admin/workers", {"worker_id": "wk-anything", "action": "stop"}
        )
        assert refused.status_code == 403


def test_a_worker_id_chosen_to_look_like_a_path_cannot_steer_the_admins_forms(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    owner, admin = unique("sly-owner"), unique("sly-admin")
    key = platform.create_user(owner)
    platform.create_user(admin, "--admin")
    name = f"{owner}/calculator"
    hostile = f"../users/1?{unique('x')}="
    with hepai_worker(server, key, name, worker_id=hostile) as process:
        with Visitor(server.url) as visitor:
            visitor.sign_in(admin)
            page = visitor.get("/admin/workers").text
            assert 'action="/admin/workers/' not in page  # ids travel in fields, not URLs
            assert wait_for_state(visitor, name, "live") == html.escape(hostile)
            users_before = platform.cli("user", "list").stdout
            stopped = visitor.submit(
                "/admin/workers", "/admin/workers", {"worker_id": hostile, "action": "stop"}
            )
            assert stopped.status_code == 303
            assert platform.cli("user", "list").stdout == users_before
        assert process.wait(20) is not None, "the worker process exits"


def test_a_model_name_cannot_smuggle_code_into_the_copyable_snippets(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    owner = unique("snippet-owner")
    key = platform.create_user(owner)
    # No whitespace: a name with any is refused outright (security.names).
    name = f'{owner}/x");print("pwned'
    with hepai_worker(server, key, name, "groups: all"), Visitor(server.url) as visitor:
        visitor.sign_in(owner)
        deadline = time.monotonic() + 15
        while name not in model_ids(server, key):
            assert time.monotonic() < deadline, "the worker never registered"
            time.sleep(0.2)
        page = visitor.get("/models/" + quote(name, safe="/")).text
        snippets = [
            html.unescape(code)
            for code in re.findall(
                r'<code id="[^"]*-code-(?:openai|hepai)">(.*?)</code>', page, flags=re.S
            )
            if owner in html.unescape(code)
        ]
        assert snippets
        # The shell command keeps the name inside one quoted argument too.
        curl = re.search(r'<code id="[^"]*-code-curl">(.*?)</code>', page, flags=re.S)
        assert curl
        words = shlex.split(html.unescape(curl.group(1)).replace("\\\n", " "))
        assert any(
            (word.startswith("http") and name in word)
            or (word.startswith("{") and json.loads(word).get("model") == name)
            for word in words
        ), words
        for snippet in snippets:
            tree = ast.parse(snippet)  # still valid Python
            named = [
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and owner in str(node.value)
            ]
            # Broken out of its string, the name would leave a shorter constant behind.
            assert named == [name] * len(named) and named, snippet
