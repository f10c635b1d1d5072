"""Quantizers: every class follows the ``Quantizer`` contract and is registered by name."""

from vqkit.quantizers import presets as _presets  # noqa: F401  (registers the named presets)
from vqkit.quantizers.base import Quantizer, straight_through
from vqkit.quantizers.codebook import Codebook
from vqkit.quantizers.composite import ProductQuantizer, ResidualQuantizer
from vqkit.quantizers.grouped import (
    GroupedResidualFSQ,
    GroupedResidualLFQ,
    GroupedResidualQuantizer,
    GroupedResidualVQ,
)
from vqkit.quantizers.ivq import IVQ
from vqkit.quantizers.latent import LatentQuantizer
from vqkit.quantizers.looc import LooC
from vqkit.quantizers.multiscale import MultiScaleVQ  # noqa: F401  (registers multiscale_vq)
from vqkit.quantizers.qinco import QINCo  # noqa: F401  (registers qinco)
from vqkit.quantizers.random_projection import RandomProjectionQuantizer
from vqkit.quantizers.residual import ProductVQ, ResidualVQ
from vqkit.quantizers.scalar import FSQ, LFQ, ResidualFSQ, ResidualLFQ
from vqkit.quantizers.simvq import SimVQ
from vqkit.quantizers.vq import VQ

__all__ = [
    "FSQ",
    "IVQ",
    "LFQ",
    "VQ",
    "Codebook",
    "GroupedResidualFSQ",
    "GroupedResidualLFQ",
    "GroupedResidualQuantizer",
    "GroupedResidualVQ",
    "LatentQuantizer",
    "LooC",
    "ProductQuantizer",
    "ProductVQ",
    "Quantizer",
    "RandomProjectionQuantizer",
    "ResidualFSQ",
    "ResidualLFQ",
    "ResidualQuantizer",
    "ResidualVQ",
    "SimVQ",
    "straight_through",
]
