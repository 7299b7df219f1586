"""Entry point `pretrain`: SupCon pretraining (see eibacl.train.pretrain)."""

import sys

from eibacl.cli import run_entry_point
from eibacl.config import PretrainConfig
from eibacl.train.pretrain import pretrain

if __name__ == "__main__":
    sys.exit(run_entry_point(PretrainConfig, sys.argv[1:], pretrain, __doc__))
