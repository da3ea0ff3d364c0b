"""``python -m hbd``: the same as the ``hbd`` console script."""

import sys

from hbd.cli import main

if __name__ == "__main__":
    sys.exit(main())
