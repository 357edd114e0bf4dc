"""The portal's languages: Chinese and English message catalogs, and which one a browser gets.

Catalogs are JSON files in ``messages/``, one per language, with the same keys; templates look
messages up by key (``t("keys.create")``). A browser that asked for a language with the switch
gets it (a cookie); otherwise the first of Chinese or English its Accept-Language prefers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from importlib import resources

LANGUAGES = ("zh", "en")
#: For browsers that name neither language.
FALLBACK = "en"

Translator = Callable[..., str]


def load_catalogs() -> dict[str, dict[str, str]]:
    folder = resources.files("hepai_server.portal") / "messages"
    return {
        language: json.loads((folder / f"{language}.json").read_text(encoding="utf-8"))
        for language in LANGUAGES
    }


def translator(catalog: Mapping[str, str]) -> Translator:
    """``t(key, **values)``: the message, with ``{name}`` fields filled. A missing key shows
    as itself, which the catalog test catches before a user could."""

    def t(key: str, /, **values: object) -> str:
        message = catalog.get(key, key)
        return message.format(**values) if values else message

    return t


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    for language in preferred(accept_language or ""):
        primary = language.split("-", 1)[0]
        if primary in LANGUAGES:
            return primary
    return FALLBACK


def preferred(accept_language: str) -> list[str]:
    """Accept-Language's tags, most preferred first (``zh-CN,zh;q=0.9,en;q=0.8``)."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language.split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.strip().lower()))
    return [tag for _, _, tag in sorted(ranked)]
