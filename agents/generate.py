"""``python -m agents.generate``: completions from any exported model (see :mod:`agents.cli.generate`)."""

import sys

from agents.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
