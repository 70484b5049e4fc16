"""``python -m agents.compare``: the algorithm comparison (it lives in :mod:`agents.cli.compare`)."""

import sys

from agents.cli.compare import _worker, main, run_one  # noqa: F401  (_worker: spawned workers find it here too)

if __name__ == "__main__":
    sys.exit(main())
