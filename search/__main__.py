"""``python -m search``: the same command line as ``run_search.py``."""
from .cli import main

raise SystemExit(main())
