"""The bench scripts import their shared ``harness`` as a top-level module, as they do when run as
``python bench/NAME.py``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
