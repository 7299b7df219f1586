"""Entry point `tune`: Optuna search over SupCon temperature and DA-Fusion strength (see
eibacl.tune.study); trials are pretrain + probe runs nested in one parent run per study."""

import sys

from eibacl.cli import run_entry_point
from eibacl.config import TuneConfig
from eibacl.tune import tune

if __name__ == "__main__":
    sys.exit(run_entry_point(TuneConfig, sys.argv[1:], tune, __doc__))
