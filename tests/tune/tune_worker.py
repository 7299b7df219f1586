"""A `tune` worker process for the tests: `entrypoints/tune.py` with the tests' cheap
far-OOD set (see conftest.py). Usage: python tune_worker.py --storage ... (tune's flags)."""

import importlib.util
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTRY_POINT = HERE.parents[1] / "entrypoints" / "tune.py"

if __name__ == "__main__":
    spec = importlib.util.spec_from_file_location("tune_test_fixtures", HERE / "conftest.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    from eibacl.data import training_data as data

    data.load_far_ood_set = fixtures.noise_far_ood
    sys.argv = [str(ENTRY_POINT), *sys.argv[1:]]
    runpy.run_path(str(ENTRY_POINT), run_name="__main__")
