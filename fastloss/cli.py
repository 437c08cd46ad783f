"""The ``fastloss`` console script: ``fastloss bench`` and ``fastloss score``.

Each subcommand lives in its own module and is imported only when it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

_COMMANDS = {
    "bench": ("fastloss.bench", "time every loss on every backend against NumPy and the floor"),
    "score": ("fastloss.scoring.cli", "score predictions stored in files, in bounded memory"),
}


def _usage() -> str:
    lines = ["usage: fastloss COMMAND [options]   (fastloss COMMAND --help for its options)", ""]
    lines += [f"  {name:<6} {about}" for name, (_, about) in _COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        from . import __version__

        print(f"fastloss {__version__}")
        return 0
    entry = _COMMANDS.get(args[0])
    if entry is None:
        print(f"fastloss: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(entry[0]).main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
