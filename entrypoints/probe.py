"""Entry point `probe`: linear probe and OOD evaluation of a pretrained encoder."""

import sys

from eibacl.cli import run_entry_point
from eibacl.config import ProbeConfig
from eibacl.evaluate.probe import probe

if __name__ == "__main__":
    sys.exit(run_entry_point(ProbeConfig, sys.argv[1:], probe, __doc__))
