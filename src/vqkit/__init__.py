"""vqkit: vector quantization for tokenizers, codecs and VQ-VAEs, with one contract for every quantizer.

>>> import vqkit
>>> q = vqkit.create_quantizer("ema_vq", dim=64, codebook_size=1024)
>>> out = q(torch.randn(8, 100, 64))       # out.quantized, out.codes [8, 100, 1], out.losses, out.metrics
>>> q.bits_per_vector                        # 10.0
"""

from vqkit.functional import nearest_code
from vqkit.io import load_quantizer, save_quantizer
from vqkit.metrics.codes.usage import CodebookUsage
from vqkit.models import Tokenizer, TokenizerOutput, build_model, list_models, load_tokenizer, save_tokenizer
from vqkit.quantizers import (
    FSQ,
    IVQ,
    LFQ,
    VQ,
    Codebook,
    LooC,
    ProductQuantizer,
    ProductVQ,
    Quantizer,
    ResidualFSQ,
    ResidualLFQ,
    ResidualQuantizer,
    ResidualVQ,
    SimVQ,
)
from vqkit.recipes import kmeans_init_from_encoder
from vqkit._version import __version__
from vqkit.registry import (
    create_quantizer,
    list_quantizers,
    quantizer_from_config,
    register_preset,
    register_quantizer,
)
from vqkit.types import Layout, QuantizerOutput

__all__ = [
    "FSQ",
    "IVQ",
    "LFQ",
    "VQ",
    "Codebook",
    "CodebookUsage",
    "Layout",
    "LooC",
    "ProductQuantizer",
    "ProductVQ",
    "Quantizer",
    "QuantizerOutput",
    "ResidualFSQ",
    "ResidualLFQ",
    "ResidualQuantizer",
    "ResidualVQ",
    "SimVQ",
    "Tokenizer",
    "TokenizerOutput",
    "__version__",
    "build_model",
    "create_quantizer",
    "kmeans_init_from_encoder",
    "list_models",
    "list_quantizers",
    "load_quantizer",
    "load_tokenizer",
    "nearest_code",
    "quantizer_from_config",
    "register_preset",
    "register_quantizer",
    "save_quantizer",
    "save_tokenizer",
]
