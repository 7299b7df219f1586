"""Entry point `generate`: DA-Fusion synthetic set (in-distribution and near-OOD variants)."""

import sys

from eibacl.cli import run_entry_point
from eibacl.config import GenerateRunConfig
from eibacl.generate.pipeline import generate

if __name__ == "__main__":
    sys.exit(run_entry_point(GenerateRunConfig, sys.argv[1:], generate, __doc__))
