"""Generator backends: the embedded pixel DDPM and Stable Diffusion (with textual
inversion), behind the `GeneratorBackend` protocol of `protocol`."""
