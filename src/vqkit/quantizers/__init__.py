"""Quantizers: every class follows the ``Quantizer`` contract and is registered by name."""

from vqkit.quantizers import presets as _presets  # noqa: F401  (registers the named presets)
from vqkit.quantizers.base import Quantizer, straight_through
from vqkit.quantizers.bsq import BSQ
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
from vqkit.quantizers.multiscale import MultiScaleVQ
from vqkit.quantizers.qinco import QINCo
from vqkit.quantizers.random_projection import RandomProjectionQuantizer
from vqkit.quantizers.residual import ProductVQ, ResidualVQ
from vqkit.quantizers.residual_lfq import ResidualLFQ
from vqkit.quantizers.scalar import FSQ, LFQ, ResidualFSQ
from vqkit.quantizers.simvq import SimVQ
from vqkit.quantizers.vq import VQ

__all__ = [
    "BSQ",
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
    "MultiScaleVQ",
    "ProductQuantizer",
    "ProductVQ",
    "QINCo",
    "Quantizer",
    "RandomProjectionQuantizer",
    "ResidualFSQ",
    "ResidualLFQ",
    "ResidualQuantizer",
    "ResidualVQ",
    "SimVQ",
    "straight_through",
]
