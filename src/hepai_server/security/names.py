"""Model names users may claim, and the key that makes look-alikes one name.

A worker's model name is how everyone else reaches it, and the calls (and the file grants
they carry) go to whoever holds it. So a name must be unambiguous and its look-alikes must
count as the same name: ``Hepai/Markitdown``, ``hepai/markitdown`` with a trailing space and
``hepai/markitdown`` spelled with a Cyrillic "e" (U+0435) are all ``hepai/markitdown``.

``check_name`` refuses what no name may be: control and format characters, whitespace, text
not in Unicode's NFKC form, and scripts mixed in ways that confuse (Latin with Cyrillic or
Greek; Latin with Han and the Japanese and Korean scripts is fine, as UTS #39's "highly
restrictive" level allows). ``claim_key`` is what claims are compared by: NFKC, case-folded,
trimmed, and every character that looks like a Latin one replaced by it (the Unicode
confusables data, through the confusable_homoglyphs package).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection

from confusable_homoglyphs import categories, confusables

from hepai_server.errors import InvalidRequest

MAX_NAME = 256
#: The namespace of the platform's own tools and models.
PLATFORM_PREFIX = "hepai/"
#: Scripts that may share a name with Latin (UTS #39, highly restrictive); COMMON covers
#: digits and punctuation.
_WITH_LATIN = (
    {"HAN", "HIRAGANA", "KATAKANA"},
    {"HAN", "BOPOMOFO"},
    {"HAN", "HANGUL"},
)
_IGNORED_SCRIPTS = {"COMMON", "INHERITED"}


def check_name(name: object, *, param: str = "model_name") -> str:
    """The name, if a model may be called it; else InvalidRequest saying why."""
    if not isinstance(name, str):
        raise InvalidRequest("a model name is a string", param=param)
    if not name or len(name) > MAX_NAME:
        raise InvalidRequest(f"a model name has 1-{MAX_NAME} characters", param=param)
    for char in name:
        category = unicodedata.category(char)
        if category[0] == "C":
            raise InvalidRequest(
                f"model name {name!r} contains a control or invisible character", param=param
            )
        if category[0] == "Z":
            raise InvalidRequest(f"model name {name!r} contains whitespace", param=param)
    if unicodedata.normalize("NFKC", name) != name:
        raise InvalidRequest(
            f"model name {name!r} is not in Unicode normal form (NFKC); "
            f"write it as {unicodedata.normalize('NFKC', name)!r}",
            param=param,
        )
    scripts = categories.unique_aliases(name) - _IGNORED_SCRIPTS
    if len(scripts) > 1 and not _may_mix(scripts):
        raise InvalidRequest(
            f"model name {name!r} mixes scripts ({', '.join(sorted(scripts))}) that can "
            "look alike; use one script",
            param=param,
        )
    return name


def _may_mix(scripts: set[str]) -> bool:
    rest = scripts - {"LATIN"}
    return any(rest <= allowed for allowed in _WITH_LATIN)


def claim_key(name: str) -> str:
    """What claims are compared by: two names with the same key are the same name."""
    folded = unicodedata.normalize("NFKC", name.strip()).casefold()
    return "".join(_latin_lookalike(char) for char in folded)


def _latin_lookalike(char: str) -> str:
    if char.isascii():
        return char
    found = confusables.is_confusable(char, greedy=True, preferred_aliases=["latin"])
    if not found:
        return char
    for glyph in found[0]["homoglyphs"]:
        if glyph["c"].isascii():
            return str(glyph["c"]).casefold()
    return char


def is_reserved(key: str, builtin_keys: Collection[str]) -> bool:
    """Names only the platform may claim: its ``hepai/`` namespace and its built-in tools."""
    return key.startswith(PLATFORM_PREFIX) or key in builtin_keys
