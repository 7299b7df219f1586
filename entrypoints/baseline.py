"""Entry point `baseline`: cross-entropy training of the same encoder, evaluated like a probe."""

import sys

from eibacl.cli import run_entry_point
from eibacl.config import BaselineConfig
from eibacl.train.baseline import baseline

if __name__ == "__main__":
    sys.exit(run_entry_point(BaselineConfig, sys.argv[1:], baseline, __doc__))
