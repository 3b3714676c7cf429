"""README command extraction and running: bash blocks only, continuation lines joined, comments skipped, a
failing command names its README line, and a block no test ran is reported."""

from __future__ import annotations

import pytest

from mg_testing.readme import check_all_blocks_run, run_block, shell_blocks

README = """# Title

```bash
echo one > a.txt   # a comment after a command stays (bash ignores it)
# a comment line
cat a.txt \\
    b.txt 2>/dev/null || echo joined
```

```text
not run: a template <with placeholders>
```

```python
print("not a shell block")
```

```bash
false
```
"""


def test_blocks_are_found_with_their_lines_and_joined_commands(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    blocks = shell_blocks(readme)
    assert [b.line for b in blocks] == [3, 18]
    assert blocks[0].commands == (
        "echo one > a.txt   # a comment after a command stays (bash ignores it)",
        "cat a.txt b.txt 2>/dev/null || echo joined",
    )
    results = run_block(blocks[0], tmp_path / "work")
    assert (tmp_path / "work" / "a.txt").read_text() == "one\n" and results[1].stdout == "one\njoined\n"
    with pytest.raises(
        AssertionError, match=r"README.md:18: README command failed with exit code 1:\n  false"
    ):
        run_block(blocks[1], tmp_path / "work")
    with pytest.raises(AssertionError, match=r"README.md:18: false"):
        check_all_blocks_run(readme, blocks[:1])
    check_all_blocks_run(readme, blocks[:1], about=lambda block: "echo" in block.text)
