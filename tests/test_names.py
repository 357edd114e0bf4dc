"""Model names: what no name may be, and the claim key that makes look-alikes one name."""

from __future__ import annotations

import pytest

from hepai_server.errors import InvalidRequest
from hepai_server.security.names import check_name, claim_key, is_reserved

CYRILLIC_E = "\u0435"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("hepai/markitdown ", "whitespace"),
        (" hepai/markitdown", "whitespace"),
        ("hepai/mark itdown", "whitespace"),
        ("hepai/mark\u00a0itdown", "whitespace"),
        ("hepai/\u200bmarkitdown", "invisible"),
        ("hepai/markitdown\x00", "control"),
        ("alice/tool\u202e", "invisible"),
        (f"h{CYRILLIC_E}pai/markitdown", "mixes scripts"),
        ("\uff48\uff45\uff50\uff41\uff49/x", "NFKC"),
        ("", "1-256"),
        ("x" * 257, "1-256"),
        (None, "string"),
    ],
)
def test_names_no_model_may_have_are_refused(name: object, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        check_name(name)


@pytest.mark.parametrize(
    "name",
    ["hepai/markitdown", "deepseek-ai/deepseek-r1:671b", "物理/模型", "hepai/模型", "a_b.c-d@e+f"],
)
def test_ordinary_names_pass_unchanged(name: str) -> None:
    assert check_name(name) == name


def test_look_alikes_share_one_claim_key() -> None:
    key = claim_key("hepai/markitdown")
    assert claim_key("Hepai/MarkItDown") == key
    assert claim_key("hepai/markitdown ") == key
    assert claim_key(f"h{CYRILLIC_E}pai/markitdown") == key
    # A whole name in another script that looks Latin folds onto the Latin name too.
    assert claim_key("\u0430\u043e\u0440\u0441/x") == claim_key("aopc/x")
    assert claim_key("hepai/markitdown2") != key


def test_the_platform_namespace_and_builtin_names_are_reserved() -> None:
    builtins = {claim_key("tools/embedder")}
    assert is_reserved(claim_key("hepai/anything"), builtins)
    assert is_reserved(claim_key("HEPAI/Anything"), builtins)
    assert is_reserved(claim_key("Tools/Embedder"), builtins)
    assert not is_reserved(claim_key("alice/hepai"), builtins)
