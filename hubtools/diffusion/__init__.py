"""SpeeD: faster diffusion training by choosing which timesteps to train on and how to weight them.

- :mod:`hubtools.diffusion.speed`: ``SpeeDTimestepSampler``, ``UniformTimestepSampler``, ``make_timestep_sampler``.
- :mod:`hubtools.diffusion.trainer`: DDPM training of a diffusers ``UNet2DModel`` with any of those
  samplers on the shared loop, saved as a ``DDPMPipeline`` folder with its card.
- :mod:`hubtools.diffusion.bench`: the steps-to-quality speed-up benchmark on real images.
"""

from hubtools.diffusion.speed import (
    SamplerError,
    SpeeDTimestepSampler,
    UniformTimestepSampler,
    make_timestep_sampler,
)

__all__ = ["SamplerError", "SpeeDTimestepSampler", "UniformTimestepSampler", "make_timestep_sampler"]
