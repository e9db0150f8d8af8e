"""``python -m posenc``: the same command line as ``posenc``."""

import sys

from posenc.cli import main

sys.exit(main())
