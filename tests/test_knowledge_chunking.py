"""Chunking along a document's structure, the token estimate, and OpenAI's chunking_strategy."""

from __future__ import annotations

import itertools

import pytest

from hepai_server.errors import InvalidRequest
from hepai_server.knowledge.chunking import (
    ChunkingStrategy,
    chunk_markdown,
    parse_blocks,
    strategy_from_request,
)
from hepai_server.knowledge.tokens import count_tokens, split_by_tokens

REPORT = """# Quarterly Detector Report

## Calibration Results

The calorimeter was calibrated with cosmic muons. The gains moved by less than one percent.

| Channel | Gain | Status |
| --- | --- | --- |
| ECAL-1 | 1.02 | good |
| HCAL-7 | 0.97 | noisy |

<!-- page: 2 -->
## 束流条件

对撞机在整个运行期间保持稳定。亮度达到了设计值的百分之九十。

```python
print("fit")
```
"""


def test_blocks_carry_their_heading_path_and_page() -> None:
    blocks = parse_blocks(REPORT)
    kinds = [block.kind for block in blocks]
    assert kinds == ["heading", "heading", "paragraph", "table", "heading", "paragraph", "code"]
    table = blocks[3]
    assert table.text.count("\n") == 3  # header, rule and two rows: one block
    assert table.headings == ("Quarterly Detector Report", "Calibration Results")
    assert table.page is None
    assert blocks[5].headings == ("Quarterly Detector Report", "束流条件")
    assert blocks[5].page == 2


def test_each_section_is_its_own_chunk_with_its_path() -> None:
    chunks = chunk_markdown(REPORT)
    assert [chunk.heading for chunk in chunks] == [
        "Quarterly Detector Report > Calibration Results",
        "Quarterly Detector Report > 束流条件",
    ]
    first, second = chunks
    assert "| HCAL-7 | 0.97 | noisy |" in first.text and "cosmic muons" in first.text
    assert first.page is None and second.page == 2
    assert 'print("fit")' in second.text
    assert first.indexed_text().startswith("Quarterly Detector Report > Calibration Results\n")


def test_a_table_that_fits_is_never_cut() -> None:
    rows = "\n".join(f"| run {i} | {1000 + i} events | stable |" for i in range(30))
    markdown = (
        "# Runs\n\n" + "Intro sentence. " * 40 + "\n\n| Run | Events | Beam |\n|---|---|---|\n"
    )
    chunks = chunk_markdown(markdown + rows, ChunkingStrategy(max_tokens=400, overlap_tokens=0))
    holding = [chunk for chunk in chunks if "| run 0 |" in chunk.text]
    assert len(holding) == 1 and "| run 29 |" in holding[0].text
    assert all(chunk.tokens <= 400 for chunk in chunks)


def test_a_table_larger_than_a_chunk_is_cut_between_rows_with_its_header() -> None:
    rows = "\n".join(f"| run {i} | {1000 + i} events | stable beam |" for i in range(120))
    markdown = "# Runs\n\n| Run | Events | Beam |\n|---|---|---|\n" + rows
    chunks = chunk_markdown(markdown, ChunkingStrategy(max_tokens=200, overlap_tokens=0))
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.tokens <= 200 + 10  # the heading line rides along with the first part
        assert "| Run | Events | Beam |" in chunk.text
    text = "\n".join(chunk.text for chunk in chunks)
    assert all(f"| run {i} |" in text for i in range(120))


def test_long_prose_is_cut_between_sentences_and_overlaps() -> None:
    prose = " ".join(f"Sentence {i} says the muon decays." for i in range(200))
    chunks = chunk_markdown("# Notes\n\n" + prose, ChunkingStrategy(100, 40))
    assert len(chunks) > 10
    for before, after in itertools.pairwise(chunks):
        assert after.tokens <= 100
        assert after.text.startswith("Sentence")  # whole sentences: never cut mid-way
        first_sentence = after.text.split(". ")[0]
        assert first_sentence in before.text  # the overlap repeats the end of the last one


def test_chinese_prose_is_cut_after_full_stops() -> None:
    prose = "".join(f"第{i}段说明了探测器的刻度方法。" for i in range(200))
    chunks = chunk_markdown(prose, ChunkingStrategy(100, 0))
    assert len(chunks) > 5
    assert all(chunk.text.endswith("。") for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks) == prose


def test_a_heading_without_text_lives_on_only_in_paths() -> None:
    chunks = chunk_markdown("# A\n\n# B\n\nbody of b\n")
    assert [(c.heading, c.text) for c in chunks] == [("B", "# B\n\nbody of b")]


def test_the_token_estimate_is_close_to_the_minilm_tokenizer() -> None:
    from tokenizers import Tokenizer

    from hepai_server.worker.builtin.encoder import packaged_minilm

    tokenizer = Tokenizer.from_file(str(packaged_minilm() / "tokenizer.json"))
    tokenizer.no_padding()  # the model pads and cuts every input to 128
    tokenizer.no_truncation()
    tokenizer.no_padding()  # the model pads and cuts every input to 128
    tokenizer.no_truncation()
    english = (
        "The muon lifetime was measured with a plastic scintillator; the fitted value of "
        "2.19 microseconds agrees with the accepted one within its uncertainty. "
    ) * 5
    chinese = "渐近自由是量子色动力学的重要性质，夸克之间的相互作用在高能量下变弱。" * 5  # noqa: RUF001
    for text in (english, chinese):
        real = len(tokenizer.encode(text, add_special_tokens=False).ids)
        assert abs(count_tokens(text) - real) <= real / 4, (count_tokens(text), real)


def test_split_by_tokens_never_cuts_inside_a_word() -> None:
    text = " ".join(["supercalifragilistic"] * 50)
    windows = split_by_tokens(text, 20, 5)
    assert all(set(window.split()) == {"supercalifragilistic"} for window in windows)
    assert all(count_tokens(window) <= 20 for window in windows)


def test_chunking_strategy_follows_openai() -> None:
    assert strategy_from_request(None) == ChunkingStrategy(800, 400)
    assert strategy_from_request({"type": "auto"}) == ChunkingStrategy(800, 400)
    static = {
        "type": "static",
        "static": {"max_chunk_size_tokens": 300, "chunk_overlap_tokens": 50},
    }
    assert strategy_from_request(static) == ChunkingStrategy(300, 50)
    assert ChunkingStrategy(300, 50).to_wire() == static


@pytest.mark.parametrize(
    "value",
    [
        {"type": "semantic"},
        {"type": "static"},
        {"type": "static", "static": {"max_chunk_size_tokens": 99}},
        {"type": "static", "static": {"max_chunk_size_tokens": 4097}},
        {"type": "static", "static": {"max_chunk_size_tokens": 300, "chunk_overlap_tokens": 151}},
        {"type": "static", "static": {"max_chunk_size_tokens": "300"}},
    ],
)
def test_bad_chunking_strategies_are_400(value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        strategy_from_request(value)
    assert caught.value.param == "chunking_strategy"
