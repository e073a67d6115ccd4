#!/usr/bin/env python
"""Run or resume a search: ``python run_search.py --config configs/quick.yaml`` (see ``--help``)."""
from search.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
