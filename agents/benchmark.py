"""``python -m agents.benchmark``: algorithms x tasks x seeds with rliable statistics (:mod:`agents.cli.benchmark`)."""

import sys

from agents.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
