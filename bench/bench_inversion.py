"""What learning the class rows on a prior costs at the defaults (issue 20: <= 5 min on 2 cores).

    python bench/bench_inversion.py                 # default split (50 shots), shipped prior
    python bench/bench_inversion.py --shots 10      # the few-shot end

Loads the shipped prior (`generator_prior=default`), checks it fits the split, and times the
inversion of one row per class on the training split (`inversion_steps`, default 300) with
the prior frozen; prints the seconds, the steps per second and the loss at the start and end.
Drives the library (`eibacl.generate.backends.ddpm_inversion`), not a copy of it.
"""

from __future__ import annotations

import argparse
import time

import torch

from eibacl.config import GenerateRunConfig
from eibacl.data.training_data import prepare_data
from eibacl.generate.backends.ddpm_inversion import fit_on_prior, prior_of_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=GenerateRunConfig.shots)
    parser.add_argument("--steps", type=int, default=GenerateRunConfig.inversion_steps)
    args = parser.parse_args()
    config = GenerateRunConfig(
        shots=args.shots, inversion_steps=args.steps, generator_prior="default", device="cpu"
    )
    data = prepare_data(config)
    prior = prior_of_run(config, data, torch.device("cpu"))
    if prior is None:
        raise SystemExit("no shipped prior for the default data: train one (`-e prior`)")
    start = time.perf_counter()
    backend = fit_on_prior(prior, config, data, data.train_x, progress=False)
    seconds = time.perf_counter() - start
    stats = backend.ti_stats
    print(
        f"inversion: {len(data.train_x)} images, {args.steps} steps, {seconds:.1f} s "
        f"({args.steps / seconds:.2f} steps/s, torch threads {torch.get_num_threads()}); "
        f"loss {stats['inversion/loss_start']:.4f} -> {stats['inversion/loss_end']:.4f}; "
        f"rows moved {stats['inversion/row_change']:.2f} of their norm; prior {prior.folder}"
    )


if __name__ == "__main__":
    main()
