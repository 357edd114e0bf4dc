"""A stand-in for MinerU's vision-language model server, for tests on a machine without a GPU.

On a GPU node MinerU's VLM (MinerU2.5) is served behind an OpenAI-compatible API
(``mineru-vllm-server``), and MinerU's ``vlm-http-client`` backend asks it two things per page:
the layout (``"\\nLayout Detection:"`` with the page image: blocks as
``<|box_start|>x0 y0 x1 y1<|box_end|><|ref_start|>type<|ref_end|>`` on a 0-1000 grid), then
the content of each block's crop (``"\\nText Recognition:"``, ``"\\nTable Recognition:"``,
``"\\nFormula Recognition:"``). This server answers the same questions with Tesseract instead of
the model: blocks from Tesseract's page layout (a block of one line set larger than the body
text is a title; picture regions are images), text by OCR of the crop. So what MinerU makes of
a page depends on what is really on it, and everything around the model runs for real.

Run it with ``python -m hepai_server.testing.mock_mineru_vlm --port 30000``;
``GET /_mock/requests`` lists the prompts it was asked.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from hepai_server.worker.builtin.ocr import LANGUAGES, TESSDATA, read_image

MODEL = "mineru2.5-tesseract"
#: A line this much taller than the page's median line is a title.
TITLE_RATIO = 1.35


@dataclass
class MockVLM:
    prompts: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.complete)
        app.router.add_get("/health", self.health)
        app.router.add_get("/_mock/requests", self.requests)
        return app

    async def models(self, _request: web.Request) -> web.Response:
        model = {"id": MODEL, "object": "model", "owned_by": "mock"}
        return web.json_response({"object": "list", "data": [model]})

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def requests(self, _request: web.Request) -> web.Response:
        return web.json_response(self.prompts)

    async def complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        content = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        prompt = "".join(part.get("text", "") for part in content if part["type"] == "text")
        url = next(part["image_url"]["url"] for part in content if part["type"] == "image_url")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
        self.prompts.append(prompt.strip())
        if "Layout Detection" in prompt:
            answer = layout(image)
        elif "Table Recognition" in prompt:
            answer = table(image)
        else:  # text, and formulas read as the text they show
            answer = recognize(image)
        return web.json_response(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


def layout(page: Image.Image) -> str:
    """The page's blocks in reading order, in MinerU's layout tokens."""
    import tesserocr

    with tesserocr.PyTessBaseAPI(path=str(TESSDATA), lang=LANGUAGES) as api:
        api.SetImage(page)
        api.AnalyseLayout()
        blocks: list[tuple[str, tuple[int, int, int, int]]] = []
        lines = [box for _, box, _, _ in api.GetComponentImages(tesserocr.RIL.TEXTLINE, True)]
        median = statistics.median(box["h"] for box in lines) if lines else 0
        for _, box, _, _ in api.GetComponentImages(tesserocr.RIL.BLOCK, True):
            inside = [
                line
                for line in lines
                if box["y"] <= line["y"] < box["y"] + box["h"]
                and box["x"] <= line["x"] < box["x"] + box["w"]
            ]
            if not inside:
                kind = "image"
            elif len(inside) == 1 and inside[0]["h"] > TITLE_RATIO * median:
                kind = "title"
            else:
                kind = "text"
            blocks.append((kind, (box["x"], box["y"], box["x"] + box["w"], box["y"] + box["h"])))
    width, height = page.size
    return "".join(
        f"<|box_start|>{x0 * 1000 // width:03d} {y0 * 1000 // height:03d} "
        f"{x1 * 1000 // width:03d} {y1 * 1000 // height:03d}<|box_end|>"
        f"<|ref_start|>{kind}<|ref_end|><|rotate_up|>"
        for kind, (x0, y0, x1, y1) in blocks
    )


def recognize(crop: Image.Image) -> str:
    return " ".join(read_image(crop).split())


def table(crop: Image.Image) -> str:
    """A table as OTSL, the model's table tokens: a row per line of text, a cell per word."""
    rows = [line.split() for line in read_image(crop).splitlines()]
    return "".join("".join(f"<fcel>{cell}" for cell in row) + "<nl>" for row in rows if row)


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    args = parser.parse_args(argv)
    web.run_app(MockVLM().app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
