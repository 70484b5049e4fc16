"""``python -m agents.train_ray``: the main job on Ray Train workers (it lives in :mod:`agents.cli.train_ray`)."""

import sys

from agents.cli.train_ray import main

if __name__ == "__main__":
    sys.exit(main())
