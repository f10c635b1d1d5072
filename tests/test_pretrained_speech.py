"""The shipped speech models load offline and code a waveform at their rate."""

from __future__ import annotations

import torch

import vqkit


def test_speech_tokenizer_codes_at_24_bits_per_frame_and_decodes_its_forward() -> None:
    tokenizer = vqkit.load_pretrained("speech_rvq24")
    entry = next(e for e in vqkit.list_pretrained() if e.name == "speech_rvq24")
    assert entry.rate == 1200.0 and entry.metrics["stoi"] >= 0.80  # the IVQ paper's rate, issue 15's target
    x = 0.1 * torch.randn(1, 1, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        codes = tokenizer.encode(x)
        assert codes.shape == (1, 25, 4)  # 50 frames/s, 4 levels of 64 codes: 4 x 6 = 24 bits a frame
        out = tokenizer(x).reconstruction
        torch.testing.assert_close(tokenizer.decode(codes, length=8000), out)


def test_speech_backbone_reconstructs_unquantized() -> None:
    backbone = vqkit.load_pretrained("speech_backbone")
    x = 0.1 * torch.randn(1, 1, 4000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = backbone.forward_unquantized(x)
    assert out.reconstruction.shape == x.shape and torch.isfinite(out.reconstruction).all()
