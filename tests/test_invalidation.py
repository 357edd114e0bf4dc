"""The shared generation counter: a bump in one process is seen by another at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hepai_server.state.generation import Generation


def test_bump_in_another_process_is_visible_immediately(tmp_path: Path) -> None:
    path = tmp_path / "gen"
    generation = Generation(path)
    start = generation.read()
    code = (
        "from pathlib import Path; from hepai_server.state.generation import Generation;"
        f"g = Generation(Path({str(path)!r})); g.bump(); g.bump()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert generation.read() == start + 2
    assert generation.bump() == start + 3
    generation.close()
