"""The worker registry through the DDF routes, in process: what registration takes and keeps,
who may register, and how a worker that stops sending heartbeats leaves and comes back.

Registrations here are the SDK's request bodies sent by hand; real workers (the hepai SDK's and
ours) are in test_ddf.py and test_worker_sdk.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa

from tests.inprocess import Account, App
from tests.workers.registration import worker_info


async def register(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(
        "/apiv2/worker/register_worker", headers={"Authorization": f"Bearer {key}"}, json=body
    )


async def model_ids(client: httpx.AsyncClient, key: str) -> set[str]:
    response = await client.get("/apiv2/models", headers={"x-api-key": key})
    return {row["id"] for row in response.json()["data"]}


async def test_secret_is_never_returned_nor_stored_in_clear(
    app: App, client: httpx.AsyncClient, make_user: Callable[..., Account], unique
) -> None:
    key = make_user(unique("secretive-owner")).key
    worker_id, name = unique("wk-secret"), unique("owner/secret-model")
    secret = "sk-" + "w" * 47
    body = worker_info(name, worker_id, groups=["all"], secret_key=secret, unknown_extra=1)
    answer = await register(client, key, body)
    assert answer.status_code == 200 and secret not in answer.text
    assert "unknown_extra" not in answer.json()
    for response in (
        await client.get("/apiv2/worker/list_workers", headers={"x-api-key": key}),
        await client.post(
            "/apiv2/worker/get_worker_info",
            headers={"x-api-key": key},
            json={"worker_id": worker_id, "model_name": None},
        ),
    ):
        assert response.status_code == 200 and secret not in response.text
    with app.platform.session() as session:
        dump = str(session.execute(sa.text("SELECT * FROM workers")).all())
    assert worker_id in dump and secret not in dump


async def test_registration_needs_a_valid_key(client: httpx.AsyncClient, unique) -> None:
    response = await client.post(
        "/apiv2/worker/register_worker",
        headers={"Authorization": ""},
        json=worker_info(unique("x/y"), unique("wk")),
    )
    assert response.status_code == 401


async def test_missed_heartbeats_expire_a_worker_and_the_next_one_returns_it(
    app: App, client: httpx.AsyncClient, make_user: Callable[..., Account], unique
) -> None:
    key = make_user(unique("heartbeat")).key
    worker_id, name = unique("wk-beat"), unique("beat/model")
    assert (await register(client, key, worker_info(name, worker_id))).status_code == 200
    assert name in await model_ids(client, key)
    # Its last heartbeat falls just past the expiry, as if it had gone quiet that long.
    silent_since = time.time() - app.gateway.settings.worker_expiry_seconds - 1
    with app.platform.session() as session:
        session.execute(
            sa.text("UPDATE workers SET last_heartbeat = :t WHERE id = :id"),
            {"t": silent_since, "id": worker_id},
        )
    assert name not in await model_ids(client, key)
    gate = await client.post(
        "/apiv2/worker/unified_gate/",
        params={"model": name, "function": "add"},
        headers={"x-api-key": key},
        json={},
    )
    assert gate.status_code == 503
    assert (await register(client, key, worker_info(name, worker_id))).status_code == 200
    assert name in await model_ids(client, key)
