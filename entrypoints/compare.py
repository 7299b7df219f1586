"""Entry point `compare` (see eibacl.workflow.compare)."""

import sys

from eibacl.cli import run_entry_point
from eibacl.config import CompareConfig
from eibacl.workflow.compare import compare

if __name__ == "__main__":
    sys.exit(run_entry_point(CompareConfig, sys.argv[1:], compare, __doc__))
