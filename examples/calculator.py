"""The smallest useful worker: `hepai-server worker run examples/calculator.py:Calculator
--controller http://127.0.0.1:4260` with HEPAI_API_KEY set to the owner's key."""

from __future__ import annotations

from collections.abc import Iterator

from hepai_server.worker import Worker, remote


class Calculator(Worker):
    """Adds numbers; streams counts."""

    name = "demo/calculator"
    permission = "groups: all"

    @remote
    def add(self, a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    @remote
    def count(self, n: int = 3) -> Iterator[dict[str, int]]:
        """Stream n counts."""
        for i in range(n):
            yield {"i": i}
