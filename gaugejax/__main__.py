"""``python -m gaugejax`` is the ``gaugejax`` command."""

import sys

from gaugejax.cli import main

if __name__ == "__main__":
    sys.exit(main())
