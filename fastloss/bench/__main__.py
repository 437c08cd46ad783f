"""``python -m fastloss.bench [options]``: the same as ``fastloss bench``."""

import sys

from .cli import main

sys.exit(main())
