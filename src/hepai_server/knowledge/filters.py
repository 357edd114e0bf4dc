"""OpenAI's attribute filters for file search: comparisons and their and/or compounds.

``{"type": "eq", "key": "year", "value": 2024}``; ``eq ne gt gte lt lte`` compare one value,
``in nin`` a list; ``{"type": "and" | "or", "filters": [...]}`` combine. A file whose
attributes lack the key matches only ``ne`` and ``nin``. A malformed filter is a 400 before
any search runs.
"""

from __future__ import annotations

from typing import Any

from hepai_server.errors import InvalidRequest

COMPARISONS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"})
MAX_DEPTH = 8


def check_filter(value: Any, depth: int = 0) -> dict[str, Any]:
    """The filter, checked; raises InvalidRequest (param ``filters``)."""
    if not isinstance(value, dict) or depth > MAX_DEPTH:
        raise InvalidRequest("'filters' must be a comparison or compound filter", param="filters")
    kind = value.get("type")
    if kind in ("and", "or"):
        parts = value.get("filters")
        if not isinstance(parts, list) or not parts:
            raise InvalidRequest(f"an '{kind}' filter needs a list of filters", param="filters")
        for part in parts:
            check_filter(part, depth + 1)
        return value
    if kind not in COMPARISONS:
        raise InvalidRequest(f"unknown filter type {kind!r}", param="filters")
    if not isinstance(value.get("key"), str):
        raise InvalidRequest("a comparison filter needs a string 'key'", param="filters")
    target = value.get("value")
    if kind in ("in", "nin"):
        if not isinstance(target, list):
            raise InvalidRequest(f"an '{kind}' filter compares with a list", param="filters")
    elif not isinstance(target, str | int | float | bool):
        raise InvalidRequest("a comparison filter's value is a string, number or boolean")
    return value


def matches(condition: dict[str, Any], attributes: dict[str, Any]) -> bool:
    """Whether a file with these attributes passes the (checked) filter."""
    kind = condition["type"]
    if kind == "and":
        return all(matches(part, attributes) for part in condition["filters"])
    if kind == "or":
        return any(matches(part, attributes) for part in condition["filters"])
    key, target = condition["key"], condition["value"]
    if key not in attributes:
        return kind in ("ne", "nin")
    actual = attributes[key]
    if kind == "eq":
        return bool(actual == target)
    if kind == "ne":
        return bool(actual != target)
    if kind == "in":
        return bool(actual in target)
    if kind == "nin":
        return bool(actual not in target)
    numeric = (int, float)
    comparable = (isinstance(actual, numeric) and isinstance(target, numeric)) or (
        isinstance(actual, str) and isinstance(target, str)
    )
    if not comparable or isinstance(actual, bool) or isinstance(target, bool):
        return False
    outcome: bool = {
        "gt": actual > target,
        "gte": actual >= target,
        "lt": actual < target,
        "lte": actual <= target,
    }[kind]
    return outcome
