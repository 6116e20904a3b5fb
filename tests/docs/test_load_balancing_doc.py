"""The whole configurations shown in docs/load-balancing.md load and build a generation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kernel.config import loads_config
from kernel.generation import build_generation

DOC = Path(__file__).resolve().parents[2] / "docs" / "load-balancing.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
#: Blocks that are whole configurations (the others are fragments of a table).
WHOLE = [
    b
    for b in BLOCKS
    if b.lstrip().startswith(("[[routes]]", "[[groups]]"))
    and ("[[groups]]" in b or 'group = "stable"' in b)
]


def test_the_doc_has_whole_examples() -> None:
    assert len(WHOLE) >= 5


@pytest.mark.parametrize("block", WHOLE, ids=[f"block{i}" for i in range(len(WHOLE))])
def test_a_whole_example_builds(block: str, tmp_path: Path) -> None:
    text = block
    if 'group = "stable"' in text:  # the canary example names two groups it leaves out
        text += '\n[[groups]]\nname = "stable"\nurls = "http://127.0.0.1:1"\n'
        text += '[[groups]]\nname = "next"\nurls = "http://127.0.0.1:2"\n'
    if "ca_file" in text:
        text = re.sub(r'ca_file = ".*"', "", text)  # no such file on the test machine
    settings = loads_config(text, base_dir=tmp_path, environ={}).settings
    gen = build_generation(settings)
    assert gen.groups
