"""Tokenizer models with any registered quantizer in the middle (``docs/models.md``).

>>> from vqkit.models import build_model
>>> quantizer = {"name": "vq", "kwargs": {"codebook_size": 512}}
>>> model = build_model({"name": "image_vqvae", "in_channels": 1, "quantizer": quantizer})
>>> out = model(x)                 # out.reconstruction, out.quantizer (QuantizerOutput), out.losses, out.loss
>>> codes = model.eval().encode(x) # [B, 7, 7, 1] for 28x28 inputs; model.decode(codes) == out.reconstruction
>>> model.bits_per_item((1, 28, 28))  # 49 * 9 = 441.0

Registered models: ``image_vqvae`` (CVQ-VAE / LooC conv VQ-VAE), ``mlp_vqvae`` (vectors), ``seanet_codec``
(Encodec's SEANet). ``save_tokenizer`` / ``load_tokenizer`` write and read ``config.json`` +
``weights.safetensors``. The optional ``MultiScaleSTFTDiscriminator`` and its losses are for adversarial codec
training.
"""

from vqkit.models.base import Modality, QuantizerSpec, Tokenizer, TokenizerOutput
from vqkit.models.codec import SEANetCodec
from vqkit.models.discriminator import (
    DiscriminatorOutput,
    MultiScaleSTFTDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)
from vqkit.models.image import ImageVQVAE
from vqkit.models.io import load_tokenizer, read_tokenizer_config, save_tokenizer
from vqkit.models.losses import mel_l1_loss, multi_resolution_stft_loss
from vqkit.models.mlp import MLPVQVAE
from vqkit.models.registry import build_model, list_models, model_class, register_model
from vqkit.models.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from vqkit.models.spectral import SpectralCodec as SpectralCodec  # registers spectral_codec

__all__ = [
    "MLPVQVAE",
    "DiscriminatorOutput",
    "ImageVQVAE",
    "Modality",
    "MultiScaleSTFTDiscriminator",
    "QuantizerSpec",
    "SEANetCodec",
    "SEANetConfig",
    "SEANetDecoder",
    "SEANetEncoder",
    "Tokenizer",
    "TokenizerOutput",
    "build_model",
    "discriminator_hinge_loss",
    "feature_matching_loss",
    "generator_hinge_loss",
    "list_models",
    "load_tokenizer",
    "mel_l1_loss",
    "model_class",
    "multi_resolution_stft_loss",
    "read_tokenizer_config",
    "register_model",
    "save_tokenizer",
]
