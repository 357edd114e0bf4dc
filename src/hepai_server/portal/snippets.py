"""Code that calls a model, ready to paste: curl, Python with the ``openai`` client, and the
``hepai`` client, filled with this server's URL and the model's id.

Values go in as JSON strings, which are valid Python literals whatever a model is named; in
shell commands the JSON body is single-quoted with any single quote in it closed and reopened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Snippet:
    #: The tab's name: ``curl``, ``openai`` or ``hepai``.
    tab: str
    code: str


def shell_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def curl(url: str, body: dict[str, object]) -> str:
    return (
        f"curl {url} \\\n"
        '  -H "Authorization: Bearer $HEPAI_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {shell_quoted(json.dumps(body, ensure_ascii=False, indent=2))}"
    )


OPENAI = """import os
from openai import OpenAI

client = OpenAI(base_url={base}, api_key=os.environ["HEPAI_API_KEY"])
"""
HEPAI = """from hepai import HepAI

client = HepAI(base_url={base})  # reads HEPAI_API_KEY from the environment
"""


def for_model(model: str, kind: str, base_url: str) -> list[Snippet]:
    """The snippets for one model of type ``kind`` (chat, completion, embedding, rerank, tool)."""
    api = base_url + "/apiv2"
    base, name = json.dumps(api), json.dumps(model, ensure_ascii=False)
    openai, hepai = OPENAI.format(base=base), HEPAI.format(base=base)
    if kind == "tool":
        gate = shell_quoted(f"{api}/worker/unified_gate?model={model}&function=interface")
        return [
            Snippet("curl", curl(gate, {"args": [], "kwargs": {}})),
            Snippet(
                "hepai",
                hepai + f"tool = client.get_remote_model({name})\nprint(tool.functions)\n",
            ),
        ]
    if kind == "embedding":
        body: dict[str, object] = {"model": model, "input": ["hello"]}
        call = f'result = client.embeddings.create(model={name}, input=["hello"])\n'
        call += "print(len(result.data[0].embedding))\n"
        return [
            Snippet("curl", curl(f"{api}/embeddings", body)),
            Snippet("openai", openai + call),
            Snippet("hepai", hepai + call),
        ]
    if kind == "rerank":
        body = {"model": model, "query": "...", "documents": ["...", "..."]}
        call = (
            "answer = client.post(\n"
            '    "/rerank",\n'
            f'    body={{"model": {name}, "query": "...", "documents": ["...", "..."]}},\n'
            "    cast_to=object,\n"
            ")\n"
            'print(answer["results"])\n'
        )
        return [
            Snippet("curl", curl(f"{api}/rerank", body)),
            Snippet("openai", openai + call),
            Snippet("hepai", hepai + call),
        ]
    if kind == "completion":
        body = {"model": model, "prompt": "Hello", "max_tokens": 64}
        call = f'reply = client.completions.create(model={name}, prompt="Hello", max_tokens=64)\n'
        call += "print(reply.choices[0].text)\n"
        return [
            Snippet("curl", curl(f"{api}/completions", body)),
            Snippet("openai", openai + call),
            Snippet("hepai", hepai + call),
        ]
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "stream": False}
    call = (
        "stream = client.chat.completions.create(\n"
        f"    model={name},\n"
        '    messages=[{"role": "user", "content": "Hello"}],\n'
        "    stream=True,\n"
        ")\n"
        "for chunk in stream:\n"
        '    print(chunk.choices[0].delta.content or "", end="")\n'
    )
    return [
        Snippet("curl", curl(f"{api}/chat/completions", body)),
        Snippet("openai", openai + call),
        Snippet("hepai", hepai + call),
    ]


def for_store(store_id: str, model: str, query: str, base_url: str) -> list[Snippet]:
    """Searching one knowledge base (vector store), and a chat ``model`` answering from it
    with the ``file_search`` tool."""
    api = base_url + "/apiv2"
    base = json.dumps(api)
    store, asked = json.dumps(store_id), json.dumps(query, ensure_ascii=False)
    name = json.dumps(model, ensure_ascii=False)
    tool = {"type": "file_search", "vector_store_ids": [store_id]}
    searched = curl(
        f"{api}/vector_stores/{store_id}/search", {"query": query, "max_num_results": 5}
    )
    chat = curl(
        f"{api}/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": query}], "tools": [tool]},
    )
    answer = (
        "answer = client.chat.completions.create(\n"
        f"    model={name},\n"
        f'    messages=[{{"role": "user", "content": {asked}}}],\n'
        f'    tools=[{{"type": "file_search", "vector_store_ids": [{store}]}}],\n'
        ")\n"
        "print(answer.choices[0].message.content)\n"
    )
    search_openai = (
        f"hits = client.vector_stores.search(vector_store_id={store}, query={asked}, "
        "max_num_results=5)\n"
        "for hit in hits.data:\n"
        "    print(round(hit.score, 3), hit.filename, hit.content[0].text[:80])\n\n"
    )
    search_hepai = (
        "hits = client.post(\n"
        f'    "/vector_stores/{store_id}/search",\n'
        f'    body={{"query": {asked}, "max_num_results": 5}},\n'
        "    cast_to=object,\n"
        ")\n"
        'for hit in hits["data"]:\n'
        '    print(round(hit["score"], 3), hit["filename"], hit["content"][0]["text"][:80])\n\n'
    )
    return [
        Snippet("curl", searched + "\n\n" + chat),
        Snippet("openai", OPENAI.format(base=base) + search_openai + answer),
        Snippet("hepai", HEPAI.format(base=base) + search_hepai + answer),
    ]
