"""Print a command that the README gives, so CI runs exactly what the README promises.

The README marks each command with an HTML comment on the line before its code block:
``<!-- command: test -->`` followed by a fenced block holding one line.

    python3 ci/readme_command.py test
"""

from __future__ import annotations

import pathlib
import re
import sys


def readme_command(name: str, readme: pathlib.Path) -> str:
    pattern = rf"<!-- command: {re.escape(name)} -->\s*```[a-z]*\n(.+?)\n```"
    match = re.search(pattern, readme.read_text(encoding="utf-8"))
    if match is None:
        raise SystemExit(f"README has no block marked <!-- command: {name} -->")
    return match.group(1).strip()


if __name__ == "__main__":
    root = pathlib.Path(__file__).resolve().parent.parent
    print(readme_command(sys.argv[1], root / "README.md"))
