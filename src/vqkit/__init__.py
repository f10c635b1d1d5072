"""vqkit: vector quantization for tokenizers, codecs and VQ-VAEs, with one contract for every quantizer.

>>> import vqkit
>>> q = vqkit.create_quantizer("ema_vq", dim=64, codebook_size=1024)
>>> out = q(torch.randn(8, 100, 64))       # out.quantized, out.codes [8, 100, 1], out.losses, out.metrics
>>> q.bits_per_vector                        # 10.0
"""

from vqkit import quantizers as _quantizers
from vqkit._version import __version__
from vqkit.export import export_onnx
from vqkit.functional import nearest_code
from vqkit.io import load_quantizer, save_quantizer
from vqkit.metrics.codes.usage import CodebookUsage
from vqkit.models import Tokenizer, TokenizerOutput, build_model, list_models, load_tokenizer, save_tokenizer
from vqkit.pretrained import list_pretrained, load_pretrained
from vqkit.quantizers import *  # noqa: F403  (the quantizer classes: vqkit.quantizers.__all__)
from vqkit.recipes import kmeans_init_from_encoder
from vqkit.registry import (
    create_quantizer,
    list_quantizers,
    quantizer_from_config,
    register_preset,
    register_quantizer,
    unregister_quantizer,
)
from vqkit.types import Layout, QuantizerOutput

__all__ = [
    *_quantizers.__all__,
    "CodebookUsage",
    "Layout",
    "QuantizerOutput",
    "Tokenizer",
    "TokenizerOutput",
    "__version__",
    "build_model",
    "create_quantizer",
    "export_onnx",
    "kmeans_init_from_encoder",
    "list_models",
    "list_pretrained",
    "list_quantizers",
    "load_pretrained",
    "load_quantizer",
    "load_tokenizer",
    "nearest_code",
    "quantizer_from_config",
    "register_preset",
    "register_quantizer",
    "save_quantizer",
    "save_tokenizer",
    "unregister_quantizer",
]
