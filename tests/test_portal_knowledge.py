"""The portal's knowledge-base pages without a browser: a store made, filled and searched
through its forms, forms that redirect and keep what was typed when refused, failures said
in the viewer's language, and a store's pages for its owner only."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa

from hepai_server.config import Settings
from tests.inprocess import App, prepare, running
from tests.portal import PASSWORD, AppVisitor, csrf_token

NOTE = (
    "# Calorimeter calibration\n\n"
    "The electromagnetic calorimeter was calibrated with cosmic-ray muons crossing the "
    "crystals vertically, before the beam arrived.\n"
)
STORE_URL = re.compile(r"^/knowledge/(vs_[0-9a-f]{32})$")


@pytest.fixture(scope="module")
async def kb_app(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[App]:
    """The app with the mock upstream's embedding model as the knowledge bases' model."""
    own = settings.model_copy(
        update={
            "data_dir": tmp_path_factory.mktemp("kb-portal"),
            "knowledge_embedding_model": "mock/embed",
        }
    )
    async with running(prepare(own)) as started:
        yield started


_names = iter(range(1000))


async def signed_in(app: App, language: str = "en") -> tuple[AppVisitor, str]:
    username = f"kb-user-{next(_names)}"
    app.platform.make_user(username, password=PASSWORD)
    visitor = AppVisitor(app, language=language)
    await visitor.sign_in(username)
    return visitor, username


def stores_of(app: App, username: str) -> int:
    with app.platform.session() as session:
        return int(
            session.execute(
                sa.text(
                    "SELECT count(*) FROM vector_stores s JOIN users u ON u.id = s.user_id "
                    "WHERE u.username = :name"
                ),
                {"name": username},
            ).scalar_one()
        )


async def create(visitor: AppVisitor, name: str, **fields: str) -> str:
    answer = await visitor.submit("/knowledge", "/knowledge", {"name": name, **fields})
    assert answer.status_code == 303, answer.text
    found = STORE_URL.match(answer.headers["location"])
    assert found, answer.headers["location"]
    return found.group(1)


async def upload(visitor: AppVisitor, store_id: str, name: str, data: bytes) -> httpx.Response:
    token = csrf_token((await visitor.get(f"/knowledge/{store_id}")).text)
    return await visitor.client.post(
        f"/knowledge/{store_id}/upload", data={"csrf_token": token}, files={"file": (name, data)}
    )


async def settled(visitor: AppVisitor, store_id: str) -> dict[str, dict[str, str]]:
    """The files' states once none is in progress (ingestion runs in the app's loop)."""
    for _ in range(400):
        state = (await visitor.get(f"/knowledge/{store_id}/status")).json()
        if state["in_progress"] == 0:
            return dict(state["files"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"ingestion did not finish: {state}")


async def test_a_store_made_in_the_portal_ingests_an_upload_finds_it_and_is_deleted(
    kb_app: App,
) -> None:
    visitor, username = await signed_in(kb_app)
    async with visitor:
        store_id = await create(visitor, "detector notes", expiry_days="30")
        page = await visitor.get(f"/knowledge/{store_id}")
        assert "Knowledge base “detector notes” created." in page.text
        # Reading the page again (a refresh) neither repeats the notice nor makes a store.
        again = await visitor.get(f"/knowledge/{store_id}")
        assert "created." not in again.text and stores_of(kb_app, username) == 1

        uploaded = await upload(visitor, store_id, "calibration.md", NOTE.encode())
        assert uploaded.status_code == 303
        assert uploaded.headers["location"] == f"/knowledge/{store_id}"
        [state] = (await settled(visitor, store_id)).values()
        assert (state["status"], state["label"]) == ("completed", "Ready")

        listed = (await visitor.get("/knowledge")).text
        assert "detector notes" in listed and 'data-counts="1/0/0"' in listed
        assert "(30 days unused)" in listed

        found = await visitor.get(f"/knowledge/{store_id}", params={"q": "cosmic muons"})
        assert "1 passages found." in found.text
        assert "calibration.md" in found.text and "crossing the crystals" in found.text
        assert "Calorimeter calibration" in found.text  # the passage's heading
        # The code tabs search this store, with the question asked.
        assert f"/vector_stores/{store_id}/search" in found.text
        assert "vector_stores.search(vector_store_id=" in found.text
        assert "&#34;cosmic muons&#34;" in found.text or '"cosmic muons"' in found.text

        deleted = await visitor.submit(
            f"/knowledge/{store_id}", f"/knowledge/{store_id}/delete", {}
        )
        assert (deleted.status_code, deleted.headers["location"]) == (303, "/knowledge")
        assert "Knowledge base “detector notes” deleted." in (await visitor.get("/knowledge")).text
        assert stores_of(kb_app, username) == 0
        assert (await visitor.get(f"/knowledge/{store_id}")).status_code == 404


async def test_files_picked_from_mine_are_added_and_removed(kb_app: App) -> None:
    visitor, _ = await signed_in(kb_app)
    async with visitor:
        token = csrf_token((await visitor.get("/files")).text)
        for name in ("a.md", "b.txt"):
            sent = await visitor.client.post(
                "/files", data={"csrf_token": token}, files={"file": (name, NOTE.encode())}
            )
            assert sent.status_code == 303
        store_id = await create(visitor, "picked")
        page = (await visitor.get(f"/knowledge/{store_id}")).text
        offered = re.findall(r'name="file_ids" value="(file-[0-9a-f]+)"', page)
        assert len(offered) == 2

        added = await visitor.submit(
            f"/knowledge/{store_id}", f"/knowledge/{store_id}/files", {"file_ids": offered}
        )
        assert added.status_code == 303
        assert "2 file(s) added" in (await visitor.get(f"/knowledge/{store_id}")).text
        assert {s["status"] for s in (await settled(visitor, store_id)).values()} == {"completed"}
        page = (await visitor.get(f"/knowledge/{store_id}")).text
        # Files already in the store are no longer offered.
        assert 'name="file_ids"' not in page

        removed = await visitor.submit(
            f"/knowledge/{store_id}", f"/knowledge/{store_id}/files/{offered[0]}/remove", {}
        )
        assert removed.status_code == 303
        page = (await visitor.get(f"/knowledge/{store_id}")).text
        assert "removed from the knowledge base" in page
        assert page.count("data-store-file=") == 1
        # The removed file is on offer again, and still among my files.
        assert f'value="{offered[0]}"' in page


async def test_refused_forms_say_why_and_keep_what_was_typed(kb_app: App) -> None:
    visitor, username = await signed_in(kb_app, "zh")
    async with visitor:
        refused = await visitor.submit(
            "/knowledge", "/knowledge", {"name": "束流笔记", "expiry_days": "400"}
        )
        assert refused.status_code == 400
        assert "过期天数应为 1 到 365 的整数" in refused.text
        assert 'value="束流笔记"' in refused.text and 'value="400"' in refused.text
        unnamed = await visitor.submit("/knowledge", "/knowledge", {"name": " "})
        assert unnamed.status_code == 400 and "请为知识库取一个名称。" in unnamed.text
        assert stores_of(kb_app, username) == 0

        store_id = await create(visitor, "束流笔记")
        nothing = await visitor.submit(f"/knowledge/{store_id}", f"/knowledge/{store_id}/files", {})
        assert nothing.status_code == 400 and "请至少选择一个文件。" in nothing.text


async def test_a_file_that_cannot_be_read_fails_readably_in_chinese(kb_app: App) -> None:
    visitor, _ = await signed_in(kb_app, "zh")
    async with visitor:
        store_id = await create(visitor, "扫描件")
        # No document tool serves here, so a Word file cannot be converted.
        sent = await upload(visitor, store_id, "report.docx", b"PK\x03\x04 not really")
        assert sent.status_code == 303
        [state] = (await settled(visitor, store_id)).values()
        assert state["status"] == "failed" and state["label"] == "失败"
        unreadable = "文件无法读取，或其中没有文字。"  # noqa: RUF001
        assert state["error"] == unreadable
        page = (await visitor.get(f"/knowledge/{store_id}")).text
        assert unreadable in page and 'data-counts="0/0/1"' in page
        assert "<details><summary>详情</summary>" in page


async def test_another_users_store_is_the_portals_404_page_even_when_shared(
    kb_app: App,
) -> None:
    owner, _ = await signed_in(kb_app)
    other, other_name = await signed_in(kb_app)
    async with owner, other:
        store_id = await create(owner, "private")
        await upload(owner, store_id, "n.md", NOTE.encode())
        [file_id] = (await settled(owner, store_id)).keys()
        # Shared with the other user to read through the API: still not their page.
        with kb_app.platform.session() as session:
            session.execute(
                sa.text(
                    "UPDATE vector_stores SET shared = :yes, shared_users = :users WHERE id = :id"
                ),
                {"yes": True, "users": f'["{other_name}"]', "id": store_id},
            )
        token = csrf_token((await other.get("/knowledge")).text)
        for path in (
            f"/knowledge/{store_id}",
            f"/knowledge/{store_id}/status",
            "/knowledge/vs_nope",
        ):
            answer = await other.get(path, headers={"accept": "text/html"})
            assert answer.status_code == 404 and "<html" in answer.text, path
        for action in ("delete", "files", f"files/{file_id}/remove"):
            answer = await other.client.post(
                f"/knowledge/{store_id}/{action}", data={"csrf_token": token, "file_ids": file_id}
            )
            assert answer.status_code == 404, action
        sent = await other.client.post(
            f"/knowledge/{store_id}/upload",
            data={"csrf_token": token},
            files={"file": ("x.md", b"x")},
        )
        assert sent.status_code == 404
        assert store_id not in (await other.get("/knowledge")).text
        # The owner's store and file are untouched.
        state = (await owner.get(f"/knowledge/{store_id}/status")).json()
        assert state["files"][file_id]["status"] == "completed"


async def test_a_search_that_cannot_run_says_why_on_the_page(kb_app: App) -> None:
    visitor, _ = await signed_in(kb_app)
    async with visitor:
        store_id = await create(visitor, "fragile")
        await upload(visitor, store_id, "n.md", NOTE.encode())
        await settled(visitor, store_id)
        with kb_app.platform.session() as session:
            session.execute(
                sa.text("UPDATE vector_stores SET embedding_model = 'gone/embed' WHERE id = :id"),
                {"id": store_id},
            )
        page = await visitor.get(f"/knowledge/{store_id}", params={"q": "muons"})
        assert page.status_code == 200
        assert "the knowledge base&#39;s embedding model is not available" in page.text
        assert "data-hit=" not in page.text
        with kb_app.platform.session() as session:
            session.execute(
                sa.text(
                    "UPDATE vector_stores SET expires_at = '2020-01-01 00:00:00' WHERE id = :id"
                ),
                {"id": store_id},
            )
        page = await visitor.get(f"/knowledge/{store_id}", params={"q": "muons"})
        assert "This knowledge base has expired and can no longer be searched." in page.text
        assert "Expired" in (await visitor.get("/knowledge")).text


async def test_admins_see_every_owners_knowledge_bases_in_sum_and_users_may_not(
    kb_app: App,
) -> None:
    owner, owner_name = await signed_in(kb_app)
    async with owner:
        for name in ("first", "second"):
            store_id = await create(owner, name)
        await upload(owner, store_id, "n.md", NOTE.encode())
        await upload(owner, store_id, "bad.docx", b"PK\x03\x04")
        await settled(owner, store_id)
        assert (await owner.get("/admin/knowledge")).status_code == 403
    admin_name = f"kb-admin-{next(_names)}"
    kb_app.platform.make_user(admin_name, admin=True, password=PASSWORD)
    async with AppVisitor(kb_app, language="zh") as admin:
        await admin.sign_in(admin_name)
        page = (await admin.get("/admin/knowledge")).text
        row = re.search(rf'<tr data-owner="{owner_name}">(.*?)</tr>', page, re.S)
        assert row, page
        cells = row.group(1)
        assert '<td class="num" data-label="知识库">2</td>' in cells
        assert 'data-counts="1/0/1"' in cells and "1 个失败" in cells
        assert "mock/embed" in page and "每位用户 1.0 GiB 段落文本" in page


async def test_sharing_set_on_the_page_lets_others_search_by_api_but_not_open_the_page(
    kb_app: App,
) -> None:
    owner, _ = await signed_in(kb_app)
    reader = kb_app.platform.make_user(f"kb-reader-{next(_names)}", password=PASSWORD)
    async with owner:
        store_id = await create(owner, "shared notes")
        await upload(owner, store_id, "n.md", NOTE.encode())
        await settled(owner, store_id)
        page = f"/knowledge/{store_id}"
        refused = await owner.submit(
            page, f"{page}/share", {"users": f"{reader.username}, nobody-here"}
        )
        assert refused.status_code == 400 and "No such user: nobody-here." in refused.text
        assert f'value="{reader.username}, nobody-here"' in refused.text
        shared = await owner.submit(
            page, f"{page}/share", {"users": reader.username, "groups": ["all", "not-mine"]}
        )
        assert shared.status_code == 303
        shown = (await owner.get(page)).text
        assert "Sharing saved." in shown
        # Everyone (the group "all"), and the user; a group that is not the owner's is dropped.
        assert re.search(rf"<dd data-shared>everyone, {reader.username}</dd>", shown)

    async with kb_app.openai(reader.key) as client:
        hits = await client.vector_stores.search(vector_store_id=store_id, query="cosmic muons")
        assert hits.data and hits.data[0].filename == "n.md"
    async with AppVisitor(kb_app) as visitor:
        await visitor.sign_in(reader.username)
        assert (await visitor.get(page, headers={"accept": "text/html"})).status_code == 404
