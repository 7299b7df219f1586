"""What the retrieval control costs at the defaults, and what it retrieves.

    python bench/bench_retrieval.py             # the default split and pool, CPU

Builds the default split (Fashion-MNIST, `synthetic=retrieval` at the defaults), loads the
`auto` pool, then times the two parts of a retrieval apart: the judge's reference CNN
trained on the training split plus the features of the training and pool images, and the
nearest-neighbour search. Prints the pool's size, classes and digest, the count, the
distinct pool images retrieved and the mean neighbour distance. A `compare` pays this
once per split (the neighbours are cached).
"""

from __future__ import annotations

import time

import torch

from eibacl.config import PretrainConfig
from eibacl.data.pool import load_unlabelled_pool
from eibacl.data.training_data import prepare_data
from eibacl.generate.judge.judge import nearest
from eibacl.train.retrieval import retrieval_features


def main() -> None:
    config = PretrainConfig(synthetic="retrieval", device="cpu", progress=False)
    data = prepare_data(config)
    start = time.perf_counter()
    pool = load_unlabelled_pool(config.prior_pool, data.imageset, data.split)
    loaded = time.perf_counter() - start
    print(
        f"pool: {len(pool)} images of {pool.classes}, digest {pool.digest()[:12]} ({loaded:.1f} s)"
    )
    start = time.perf_counter()
    anchors, candidates = retrieval_features(data, pool)
    featured = time.perf_counter() - start
    start = time.perf_counter()
    dists, idx = nearest(anchors, candidates, config.num_synthetic)
    searched = time.perf_counter() - start
    print(
        f"{len(anchors)} training images x {config.num_synthetic}: reference CNN + features "
        f"{featured:.1f} s, search {searched:.1f} s (torch threads {torch.get_num_threads()})"
    )
    print(
        f"retrieved {idx.numel()} ({len(torch.unique(idx))} distinct), mean neighbour "
        f"distance {dists.mean():.4f}"
    )


if __name__ == "__main__":
    main()
