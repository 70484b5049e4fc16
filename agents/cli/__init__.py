"""The command-line applications on top of the library: ``python -m agents.train`` (:mod:`agents.cli.train`, with
its :mod:`agents.cli.config`) and ``python -m agents.compare`` (:mod:`agents.cli.compare`). The library never
imports this package."""
