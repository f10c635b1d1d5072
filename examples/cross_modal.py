"""IVQ's cross-modal decoding (OpenReview Y3cUZ8fNnu, sections 3.3 and 4.4): image codes decoded by an audio
codec, and what that does and does not show.

    python examples/cross_modal.py IMAGE_RUN AUDIO_RUN --out DIR [--baseline IMAGE_RUN AUDIO_RUN]

``IMAGE_RUN`` and ``AUDIO_RUN`` are run directories (``vqkit train`` or a bench's ``runs/*``) whose quantizers
are IVQs with the same layout (``IVQ.signature``: lines and levels), e.g. the "IVQ yin-yang" run of
``configs/bench/ivq_fashion_mnist.yaml`` and the "IVQ 4x2" run of ``configs/bench/ivq_table1_speech.yaml``. Each
test image's latent grid (7 x 7 for Fashion-MNIST) is read as a sequence of audio frames (49 frames, 0.98 s at
50 Hz), its codes are decoded by the audio IVQ (``cross_decode``) and the audio decoder. ``--baseline`` takes two
runs with residual VQ instead (4 x 64: the same index space, codebooks trained independently) for comparison.

``DIR`` gets ``cross_modal.json`` (every number below), ``cross_modal.md`` (a table) and, for the first images,
``image_<i>.png`` next to ``image_<i>.wav``. Measured:

* ``geometry``: per level, ``vqkit.metrics.gram_correlation`` of the two modalities' code tables: whether code
  ``i`` relates to code ``j`` the same way in both (1) or not at all (0).
* ``usage_js_bits``: per level, the Jensen-Shannon divergence between the image codes' and the speech codes'
  histograms: how far the image codes are from what the audio decoder was trained on.
* ``log_mel_frechet``: the Fréchet distance between Gaussians fitted to the 64-band log-mel frames of half the
  real speech clips and those of (a) the other half (the floor), (b) the codec's reconstructions of them,
  (c) audio decoded from image codes, (d) audio decoded from uniformly random codes; (c) near (d) means the
  image codes carry nothing speech-like, (c) near (b) that they read as speech.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from vqkit.functional.spectral import log_mel
from vqkit.functional.stats import code_counts
from vqkit.metrics import gram_correlation, js_divergence_bits
from vqkit.metrics.eval.fid import frechet_distance
from vqkit.models import Tokenizer
from vqkit.quantizers import IVQ, ResidualQuantizer
from vqkit.utils.atomic import atomic_write_bytes, atomic_write_text


def level_tables(q: Any) -> list[torch.Tensor]:
    """The vector each code of each level decodes to: IVQ's hexagram tables ``[2**L, D]``, a residual
    quantizer's stage codebooks ``[K, d]``."""
    if isinstance(q, IVQ):
        return [level.hexagram_table() for level in q.level_list]
    if isinstance(q, ResidualQuantizer):
        return [
            stage.decode(torch.arange(k, device=q.stage_scales.device)[:, None])
            for stage, k in zip(q.stage_list, q.alphabet_sizes, strict=True)
        ]
    raise TypeError(f"quantizer: expected an IVQ or a residual quantizer, got {type(q).__name__}")


def _log_mel_frames(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``[B, channels, samples]`` -> ``[frames, 64]``: every log-mel frame of the batch."""
    mel = log_mel(audio.reshape(audio.shape[0], -1), sample_rate, n_fft=512, n_mels=64)
    return mel.transpose(1, 2).reshape(-1, mel.shape[1])


@torch.no_grad()
def cross_modal_report(
    image_model: Tokenizer,
    audio_model: Tokenizer,
    images: torch.Tensor,
    speech: torch.Tensor,
    sample_rate: int,
    seed: int = 0,
) -> tuple[dict[str, Any], torch.Tensor]:
    """The measures of the module docstring, and the audio decoded from ``images`` ``[B, channels, samples]``.

    ``images`` ``[B, C, H, W]`` go through ``image_model``; ``speech`` ``[M, channels, samples]`` through
    ``audio_model``. The image codes are decoded with the audio codebooks (``IVQ.cross_decode``: for IVQs the
    layouts must match); for other quantizers the indices are read the same way (the baseline: a shared index
    space without shared structure).
    """
    image_q, audio_q = image_model.quantizer, audio_model.quantizer
    if list(image_q.alphabet_sizes) != list(audio_q.alphabet_sizes):
        raise ValueError(
            f"image_model, audio_model: expected quantizers with the same alphabets, got "
            f"{list(image_q.alphabet_sizes)} and {list(audio_q.alphabet_sizes)}"
        )
    codes = image_model.encode(images)  # [B, H', W', C]
    frames = codes.reshape(codes.shape[0], -1, codes.shape[-1])  # the grid in raster order, as audio frames
    if isinstance(audio_q, IVQ) and isinstance(image_q, IVQ) and image_q.signature != audio_q.signature:
        raise ValueError(
            f"image_model, audio_model: cross-modal decoding needs IVQs with the same layout, got "
            f"{image_q.signature} and {audio_q.signature}"
        )
    from_images = audio_model.decode(frames)  # the image's hexagrams read with the audio codebooks
    speech_codes = audio_model.encode(speech)
    reconstructed = audio_model.decode(speech_codes)
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(list(audio_q.alphabet_sizes))
    random_codes = (torch.rand(frames.shape, generator=generator) * sizes).long()
    from_random = audio_model.decode(random_codes)

    # Speech-likeness: the Fréchet distance between Gaussians fitted to log-mel frames, against the first half
    # of the real clips; the second half gives the floor (real speech against real speech).
    half = max(1, speech.shape[0] // 2)
    reference = _log_mel_frames(speech[:half], sample_rate)
    distance = {
        name: frechet_distance(_log_mel_frames(audio, sample_rate), reference)
        for name, audio in (
            ("real_speech", speech[half:]),
            ("codec_reconstruction", reconstructed[half:]),
            ("from_image_codes", from_images),
            ("from_random_codes", from_random),
        )
    }
    geometry = [
        gram_correlation(a, b) for a, b in zip(level_tables(image_q), level_tables(audio_q), strict=True)
    ]
    usage_js = [
        js_divergence_bits(
            code_counts(frames[..., level].flatten(), k), code_counts(speech_codes[..., level].flatten(), k)
        )
        for level, k in enumerate(int(k) for k in audio_q.alphabet_sizes)
    ]
    report = {
        "image_quantizer": type(image_q).__name__,
        "audio_quantizer": type(audio_q).__name__,
        "codebook_label": [
            getattr(image_q, "codebook_label", None),
            getattr(audio_q, "codebook_label", None),
        ],
        "alphabet_sizes": list(audio_q.alphabet_sizes),
        "images": int(images.shape[0]),
        "frames_per_image": int(frames.shape[1]),
        "speech_clips": int(speech.shape[0]),
        "geometry": geometry,
        "usage_js_bits": usage_js,
        "log_mel_frechet": distance,
    }
    return report, from_images


def _load(run: str) -> tuple[Tokenizer, Any]:
    from vqkit.train.run import load_run_model, load_split, run_config

    model, _ = load_run_model(run)
    config = run_config(Path(run))
    return model, load_split(config, config.eval.split)


def _first(dataset: Any, n: int) -> torch.Tensor:
    from vqkit.train.batches import collate

    return collate(dataset, torch.arange(min(n, len(dataset))))


def _table(reports: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| pair | geometry (gram correlation per level) | usage JS bits per level | log-mel Fréchet distance to "
        "speech: real / reconstruction / image codes / random codes |",
        "|---|---|---|---|",
    ]
    for name, r in reports.items():
        d = r["log_mel_frechet"]
        lines.append(
            f"| {name} | {', '.join(f'{g:.3f}' for g in r['geometry'])} | "
            f"{', '.join(f'{j:.3f}' for j in r['usage_js_bits'])} | "
            f"{d['real_speech']:.1f} / {d['codec_reconstruction']:.1f} / {d['from_image_codes']:.1f} / "
            f"{d['from_random_codes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image_run")
    parser.add_argument("audio_run")
    parser.add_argument("--baseline", nargs=2, metavar=("IMAGE_RUN", "AUDIO_RUN"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--examples", type=int, default=4)
    args = parser.parse_args(argv)
    from vqkit.train.files import audio_bytes, image_bytes

    out = Path(args.out)
    pairs = {"IVQ": (args.image_run, args.audio_run)}
    if args.baseline:
        pairs["baseline"] = tuple(args.baseline)
    reports = {}
    for name, (image_run, audio_run) in pairs.items():
        image_model, image_data = _load(image_run)
        audio_model, audio_data = _load(audio_run)
        images = _first(image_data, args.images)
        speech = _first(audio_data, args.clips)
        sample_rate = int(audio_data.sample_rate)
        report, audio = cross_modal_report(image_model, audio_model, images, speech, sample_rate)
        reports[name] = {"image_run": str(image_run), "audio_run": str(audio_run), **report}
        if name == "IVQ":
            for i in range(min(args.examples, images.shape[0])):
                atomic_write_bytes(out / f"image_{i}.png", image_bytes(images[i]))
                atomic_write_bytes(out / f"image_{i}.wav", audio_bytes(audio[i], sample_rate))
    table = _table(reports)
    atomic_write_text(out / "cross_modal.json", json.dumps(reports, indent=2))
    atomic_write_text(out / "cross_modal.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
