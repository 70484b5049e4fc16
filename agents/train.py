"""``python -m agents.train``: the main job's command line (it lives in :mod:`agents.cli.train`)."""

import sys

from agents.cli.train import main, run  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
