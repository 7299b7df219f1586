"""Entry point `main` (see eibacl.workflow.main)."""

import sys

from eibacl.cli import run_entry_point
from eibacl.config import MainConfig
from eibacl.workflow.main import main

if __name__ == "__main__":
    sys.exit(run_entry_point(MainConfig, sys.argv[1:], main, __doc__))
