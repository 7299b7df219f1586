"""Entry point `prior`: train the embedded DDPM's diffusion prior on an unlabelled pool."""

import sys

from eibacl.cli import run_entry_point
from eibacl.config import PriorConfig
from eibacl.generate.prior_run import run_prior

if __name__ == "__main__":
    sys.exit(run_entry_point(PriorConfig, sys.argv[1:], run_prior, __doc__))
