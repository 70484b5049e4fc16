"""``python -m agents.evaluate``: evaluate a model on a task's held-out prompts (see :mod:`agents.cli.evaluate`)."""

import sys

from agents.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
