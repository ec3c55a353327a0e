"""The ``aldm`` family: adaptive latent diffusion with MS-SPADE (Kim & Park, seed paper 002)."""

from .networks import build_autoencoder, build_diffusion_unet, build_networks, build_spade
from .sampler import SAMPLERS, build_scheduler, ddim_sample, dpmpp_sample, sample
from .spade import MSSPADE
from .translator import ALDMTranslator

__all__ = [
    "ALDMTranslator",
    "MSSPADE",
    "SAMPLERS",
    "build_autoencoder",
    "build_diffusion_unet",
    "build_networks",
    "build_scheduler",
    "build_spade",
    "ddim_sample",
    "dpmpp_sample",
    "sample",
]
