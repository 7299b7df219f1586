"""DA-Fusion: what the generator is given (`generator_inputs`), the near-OOD recipes, the
variants of every real image (`augment`), the on-disk synthetic set and its sample grids."""
