"""The Python blocks of the README and the documentation pages run on their own, as written, each in a fresh
interpreter.

A block's last line, when it is an expression, is printed, and a number the
page writes beside it in a comment (``# Accuracy: 87.12%``) must be what it
prints. The block that talks to a Kafka broker runs in
``tests/test_readme_kafka.py``'s way instead (it needs one) and is left out.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = list(dict.fromkeys(b for page in PAGES for b in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)))
STANDALONE = [block for block in BLOCKS if "KafkaSettings(" not in block]


def printing_the_last_expression(block: str) -> str:
    """The block with its last statement printed when it is an expression (as a notebook shows it)."""
    tree = ast.parse(block)
    last = tree.body[-1]
    if isinstance(last, ast.Expr):
        tree.body[-1] = ast.Expr(ast.Call(ast.Name("print", ast.Load()), [last.value], []))
    return ast.unparse(ast.fix_missing_locations(tree))


def test_the_pages_have_their_python_blocks():
    assert len(STANDALONE) >= 3 and len(BLOCKS) == len(STANDALONE) + 1


@pytest.mark.parametrize("block", STANDALONE, ids=[b.splitlines()[0][:40] for b in STANDALONE])
def test_a_readme_python_block_runs_as_written(block):
    done = subprocess.run(
        [sys.executable, "-c", printing_the_last_expression(block)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    claimed = re.search(r"#\s*(\w+): ([\d.]+%)\s*$", block.strip().splitlines()[-1])
    if claimed:  # the figure the README writes beside the last line is the one it gives
        assert f"{claimed.group(1)}: {claimed.group(2)}" in done.stdout, done.stdout
