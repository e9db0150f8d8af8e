"""``python -m posenc``: the same command line as ``posenc``."""

import sys

from posenc.cli import main

if __name__ == "__main__":  # importing the module (a documentation or test tool walking the package) runs nothing
    sys.exit(main())
