"""Model names are exclusive and unambiguous: the platform's names are its own, look-alikes of
a claimed name are the same name, and an admin taking a name over leaves no other holder's
worker in the pool."""

from __future__ import annotations

import httpx
import pytest

from tests.stack import Platform, Server, hepai_worker
from tests.test_ddf import register
from tests.workers.registration import worker_info

CYRILLIC_E = "\u0435"


@pytest.mark.parametrize(
    "name",
    [
        "hepai/markitdown",
        "Hepai/Markitdown",
        "HEPAI/MINERU",
        f"h{CYRILLIC_E}pai/markitdown",
        "hepai/markitdown ",
        "hepai/\u200bmarkitdown",
        "hepai/new-tool",
        "mock/chat",  # a provider's model
        "Mock/Chat",
    ],
)
def test_platform_names_and_their_look_alikes_are_refused_to_users(
    server: Server, user_key: str, unique, name: str
) -> None:
    worker_id = unique("wk")
    answer = register(server, user_key, worker_info(name, worker_id))
    assert answer.status_code in (400, 403, 409), answer.text
    assert answer.json()["error"]["param"] in ("model_name", "resource_info")
    workers = httpx.get(
        server.base_url + "/worker/list_workers", headers={"authorization": f"Bearer {user_key}"}
    ).json()["data"]
    assert worker_id not in {worker["id"] for worker in workers}


def test_look_alikes_of_a_users_name_are_refused_to_everyone_else(
    platform: Platform, server: Server, unique
) -> None:
    first, second = platform.create_user(unique("first")), platform.create_user(unique("second"))
    name = unique("team/tool")
    assert register(server, first, worker_info(name, unique("wk"))).status_code == 200
    for look_alike in (name.upper(), name.replace("e", CYRILLIC_E, 1)):
        answer = register(server, second, worker_info(look_alike, unique("wk")))
        assert answer.status_code in (400, 403), answer.text
    # Its holder may not spell it two ways either: one name, one spelling.
    assert register(server, first, worker_info(name.upper(), unique("wk"))).status_code == 409


def test_an_admin_takeover_evicts_the_previous_holders_workers(
    platform: Platform, server: Server, unique
) -> None:
    squatter = unique("squatter")
    squatter_key = platform.create_user(squatter)
    admin_key = platform.create_user(unique("takeover-admin"), "--admin")
    caller_key = platform.create_user(unique("caller"))
    name = unique("shared/tool")
    # Two hepai workers of one name on one machine would share an id: each gets its own.
    with hepai_worker(
        server, squatter_key, name, "groups: all", worker_id=unique("wk")
    ) as squatted:
        assert server.hepai(caller_key).get_remote_model(name).pid() == squatted.pid
        with hepai_worker(
            server, admin_key, name, "groups: all", worker_id=unique("wk")
        ) as official:
            tool = server.hepai(caller_key).get_remote_model(name)
            answered = {tool.pid() for _ in range(20)}
            assert answered == {official.pid}, "no call reaches the previous holder's worker"
            listing = httpx.get(
                server.base_url + "/worker/list_workers",
                headers={"authorization": f"Bearer {admin_key}"},
            ).json()["data"]
            holders = [
                w for w in listing if any(r["model_name"] == name for r in w["resource_info"])
            ]
            assert len(holders) == 1
            # The squatter's next heartbeat is refused, saying why.
            heartbeat = register(server, squatter_key, worker_info(name, unique("wk")))
            assert heartbeat.status_code == 403
            assert "belongs to another user" in heartbeat.json()["error"]["message"]
