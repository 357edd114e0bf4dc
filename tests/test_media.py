"""Audio and images through the official openai client, in process: uploads streamed to the
upstream as they arrive (with the upstream's model name), answers relayed in every format,
audio streamed back, and a usage row for each call with what the upstream reported and the
price per call."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest

from hepai_server.testing.mock_upstream import PNG, speech_audio
from hepai_server.worker import Worker, remote
from tests.inprocess import Account, App, Upstream, serve_worker


def recorded(upstream: Upstream, path: str, marker: str) -> dict:
    """The last request to ``path`` whose body mentions ``marker``."""
    return [r for r in upstream.requests() if r["path"] == path and marker in str(r["body"])][-1]


async def test_a_transcription_reaches_the_upstream_whole_and_is_recorded(
    app: App, api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    name, audio = unique("talk") + ".wav", secrets.token_bytes(300_000)
    marker = unique("transcribe")
    result = await api.audio.transcriptions.create(
        model="mock/whisper",
        file=(name, audio, "audio/wav"),
        language="en",
        prompt=marker,
        extra_headers={"x-request-id": marker},
    )
    assert result.text == f"mock transcript of {len(audio)} bytes"
    sent = recorded(upstream, "/v1/audio/transcriptions", marker)
    assert sent["body"]["model"] == "whisper-upstream"
    assert (sent["body"]["language"], sent["body"]["prompt"]) == ("en", marker)
    (file,) = sent["body"]["files"]
    assert (file["filename"], file["bytes"]) == (name, len(audio))
    assert file["sha256"] == hashlib.sha256(audio).hexdigest()
    assert sent["headers"]["authorization"].startswith("Bearer upstream-secret")
    row = await app.platform.usage_row(marker)
    assert row["endpoint"] == "audio.transcriptions" and row["model"] == "mock/whisper"
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (7, 5, 12)


@pytest.mark.parametrize("form", ["text", "srt", "vtt", "verbose_json"])
async def test_every_transcript_format_passes_through(
    api: openai.AsyncOpenAI, form: str, unique
) -> None:
    result = await api.audio.transcriptions.create(
        model="mock/whisper", file=(unique("a") + ".mp3", b"x" * 10), response_format=form
    )
    text = result if isinstance(result, str) else result.text
    assert "mock transcript of 10 bytes" in text
    if form == "srt":
        assert isinstance(result, str) and result.startswith("1\n00:00:00,000 -->")


async def test_a_transcript_streams_as_events(app: App, account: Account, unique) -> None:
    marker = unique("stream")
    async with app.openai(account.key) as client:
        stream = await client.audio.transcriptions.create(
            model="mock/whisper",
            file=("s.wav", b"y" * 2048),
            stream=True,
            extra_headers={"x-request-id": marker},
        )
        events = [event async for event in stream]
    assert [e.type for e in events][-1] == "transcript.text.done"
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta").strip() == (
        "mock transcript of 2048 bytes"
    )
    row = await app.platform.usage_row(marker)
    assert row["stream"] and row["total_tokens"] == 12


async def test_an_upload_is_streamed_not_buffered(
    client: httpx.AsyncClient, account: Account, upstream: Upstream, unique
) -> None:
    """The upstream has the first half of the file before the client has sent the second."""
    boundary, name = "b" + secrets.token_hex(8), unique("long") + ".flac"
    head = (
        f'--{boundary}\r\ncontent-disposition: form-data; name="model"\r\n\r\nmock/whisper\r\n'
        f'--{boundary}\r\ncontent-disposition: form-data; name="file"; filename="{name}"\r\n'
        "content-type: audio/flac\r\n\r\n"
    ).encode()
    half = secrets.token_bytes(1024 * 1024)

    async def body() -> AsyncIterator[bytes]:
        yield head + half
        for _ in range(500):  # up to 10 s for the first half to reach the upstream
            if upstream.mock.receiving.get(name, 0) >= len(half) // 2:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the upstream saw nothing of the file before its end was sent")
        yield half + f"\r\n--{boundary}--\r\n".encode()

    answer = await client.post(
        "/v1/audio/transcriptions",
        content=body(),
        headers={
            "authorization": f"Bearer {account.key}",
            "content-type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"] == f"mock transcript of {2 * len(half)} bytes"


async def test_a_translation(api: openai.AsyncOpenAI, upstream: Upstream, unique) -> None:
    name = unique("speech") + ".m4a"
    result = await api.audio.translations.create(model="mock/whisper", file=(name, b"z" * 99))
    assert result.text == "mock translation of 99 bytes"
    assert recorded(upstream, "/v1/audio/translations", name)["body"]["model"] == (
        "whisper-upstream"
    )


async def test_speech_streams_back_as_audio(
    app: App, api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    marker = unique("saythis")
    async with api.audio.speech.with_streaming_response.create(
        model="mock/tts",
        voice="alloy",
        input=marker,
        response_format="wav",
        extra_headers={"x-request-id": marker},
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        pieces = [piece async for piece in response.iter_bytes()]
    assert b"".join(pieces) == b"".join(speech_audio(marker, 8))
    sent = recorded(upstream, "/v1/audio/speech", marker)["body"]
    assert (sent["model"], sent["voice"]) == ("tts-upstream", "alloy")
    row = await app.platform.usage_row(marker)
    assert row["endpoint"] == "audio.speech" and row["status_code"] == 200
    assert row["ttft_ms"] is not None


async def test_images_are_generated_and_priced_per_call(
    app: App, api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    marker = unique("detector")
    result = await api.images.generate(
        model="mock/image", prompt=marker, n=2, extra_headers={"x-request-id": marker}
    )
    assert [base64.b64decode(image.b64_json or "") for image in result.data] == [PNG, PNG]
    assert result.usage is not None and result.usage.output_tokens == 544
    assert recorded(upstream, "/v1/images/generations", marker)["body"]["model"] == (
        "image-upstream"
    )
    row = await app.platform.usage_row(marker)
    assert row["endpoint"] == "images.generations" and row["completion_tokens"] == 544
    assert row["cost_nanos"] == 40_000_000  # 0.04 per call


async def test_an_image_edit_uploads_its_images(
    app: App, api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    marker = unique("hat")
    result = await api.images.edit(
        model="mock/image",
        image=[("cat.png", PNG, "image/png"), ("dog.png", PNG, "image/png")],
        prompt=marker,
        extra_headers={"x-request-id": marker},
    )
    assert base64.b64decode(result.data[0].b64_json or "") == PNG
    sent = recorded(upstream, "/v1/images/edits", marker)["body"]
    assert sent["model"] == "image-upstream" and sent["prompt"] == marker
    assert [f["filename"] for f in sent["files"]] == ["cat.png", "dog.png"]
    row = await app.platform.usage_row(marker)
    assert row["endpoint"] == "images.edits" and row["cost_nanos"] == 40_000_000


async def test_models_of_another_type_or_not_the_callers_are_refused(
    api: openai.AsyncOpenAI, app: App, make_user: Callable[..., Account]
) -> None:
    with pytest.raises(openai.BadRequestError, match="audio model"):
        await api.audio.speech.create(model="mock/whisper", voice="alloy", input="hi")
    with pytest.raises(openai.BadRequestError, match="chat model"):
        await api.audio.transcriptions.create(model="mock/chat", file=("a.wav", b"x"))
    with pytest.raises(openai.NotFoundError):
        await api.images.generate(model="team/physics-only", prompt="x")
    stranger = make_user(allowed_models=["mock/chat"])
    async with app.openai(stranger.key) as client:
        with pytest.raises(openai.NotFoundError):
            await client.audio.transcriptions.create(model="mock/whisper", file=("a.wav", b"x"))


async def test_forms_without_a_model_and_bad_bodies_are_400(
    client: httpx.AsyncClient, account: Account
) -> None:
    auth = {"authorization": f"Bearer {account.key}"}
    no_model = await client.post(
        "/v1/audio/transcriptions", headers=auth, files={"file": ("a.wav", b"x")}
    )
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    not_a_form = await client.post("/v1/images/edits", headers=auth, json={"model": "x"})
    assert not_a_form.status_code == 400
    no_prompt = await client.post("/v1/images/generations", headers=auth, json={"model": "x"})
    assert no_prompt.status_code == 400 and no_prompt.json()["error"]["param"] == "prompt"


class Painter(Worker):
    """A worker model that generates images through its image_generations method."""

    @remote
    def image_generations(self, **request: Any) -> dict[str, Any]:
        usage = {"input_tokens": 3, "output_tokens": 10, "total_tokens": 13}
        data = [{"b64_json": base64.b64encode(PNG).decode(), "revised_prompt": request["prompt"]}]
        return {"created": 1, "data": data, "usage": usage}


async def test_worker_models_generate_images_too(
    app: App, make_user: Callable[..., Account], unique
) -> None:
    owner = make_user()
    painter = Painter()
    painter.name, painter.permission = f"{owner.username}/painter", "groups: all"
    marker = unique("paint")
    async with serve_worker(app, painter, owner.key), app.openai(owner.key) as client:
        result = await client.images.generate(
            model=painter.name, prompt=marker, extra_headers={"x-request-id": marker}
        )
    assert result.data[0].revised_prompt == marker
    row = await app.platform.usage_row(marker)
    assert row["deployment"].startswith("worker:") and row["total_tokens"] == 13
