"""Evaluation of a tokenizer on a dataset split: reconstruction metrics, codebook diagnostics, rate.

``evaluate`` runs the model in eval mode over the split (or its first ``eval.max_items`` items) and returns one
flat ``{name: float}``:

* the modality's metrics (``vqkit.metrics.image.ImageMetrics`` / ``vqkit.metrics.audio.AudioMetrics``; vectors
  get ``mse``); reconstructions of images are clamped to [0, 1] and of audio to [-1, 1] first, as a decoder's
  output would be when written to a file;
* ``codebook/...``: ``CodebookUsage`` over every code of the split (utilization, perplexity, dead codes,
  effective and nominal bits per vector);
* ``bits_per_item`` (and ``kbps`` for audio) from the model's latent shape and the quantizer's rate;
* ``loss`` and ``loss/<term>``: the weighted training objective and its terms, means over items;
* ``collapse/...`` where the dataset has ``labels`` (classes, clusters): the collapse study's scores
  (``vqkit.metrics.collapse_scores``) on the encoder outputs, one flattened row per item (the first
  ``COLLAPSE_ITEMS``), and, where an item is one code, the tokens-collapse scores; not in quick evaluations.

``quick=True`` (the periodic validation inside training) skips the expensive metrics (LPIPS, FID, STOI, PESQ)
and looks at most at 1,024 items.
"""

from __future__ import annotations

from typing import Any

import torch

from vqkit.metrics.usage import CodebookUsage
from vqkit.models.base import Tokenizer
from vqkit.train.config import RunConfig

QUICK_ITEMS = 1024
# The collapse scores hold every scored item's flattened encoder output on the host (a 16x16x256 latent is
# 256 KiB per item), so they are computed on the first COLLAPSE_ITEMS items, whatever the evaluation's size.
COLLAPSE_ITEMS = 10_000


def _metric_tracker(modality: str, dataset: Any, config: RunConfig, quick: bool) -> Any:
    if modality == "image":
        from vqkit.metrics.image import ImageMetrics

        return ImageMetrics(
            lpips=None if quick else config.eval.lpips, fid_samples=0 if quick else config.eval.fid_samples
        )
    if modality == "audio":
        from vqkit.metrics.audio import AudioMetrics

        return AudioMetrics(
            int(dataset.sample_rate), stoi=config.eval.stoi and not quick, pesq=config.eval.pesq and not quick
        )
    return None


def _collapse(
    embeddings: torch.Tensor, labels: torch.Tensor, codes: torch.Tensor, model: Tokenizer
) -> dict[str, float]:
    from vqkit.metrics.collapse import collapse_scores

    sizes = model.quantizer.alphabet_sizes
    single = codes.shape[1] == 1 and len(sizes) == 1  # one code per item: tokens collapse is defined
    scores = collapse_scores(
        embeddings, labels.long(), codes[:, 0] if single else None, int(sizes[0]) if single else None
    )
    return {f"collapse/{k}": v for k, v in scores.items()}


@torch.no_grad()
def evaluate(
    model: Tokenizer,
    dataset: Any,
    config: RunConfig,
    *,
    device: torch.device | None = None,
    quick: bool = False,
) -> dict[str, float]:
    from vqkit.train.loop import batches

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    modality = getattr(dataset, "modality", "vector")
    tracker = _metric_tracker(modality, dataset, config, quick)
    usage = CodebookUsage(model.quantizer.alphabet_sizes).to(device)
    limit = config.eval.max_items
    if quick:
        limit = min(limit or QUICK_ITEMS, QUICK_ITEMS)
    sums: dict[str, float] = {}
    squared_error, values, items = 0.0, 0, 0
    labels = None if quick else getattr(dataset, "labels", None)
    embeddings: list[torch.Tensor] = []
    item_codes: list[torch.Tensor] = []
    for x in batches(dataset, config.eval.batch_size, limit):
        x = x.to(device)
        out = model(x)
        usage.update(out.quantizer.codes)
        n = x.shape[0]
        keep = min(n, COLLAPSE_ITEMS - items)
        if labels is not None and keep > 0:
            assert out.latent is not None  # every Tokenizer.forward returns its encoder output
            embeddings.append(out.latent[:keep].flatten(1).float().cpu())
            item_codes.append(out.quantizer.codes[:keep].reshape(keep, -1).cpu())
        items += n
        sums["loss"] = sums.get("loss", 0.0) + float(out.loss) * n
        for name, value in {**out.losses, **out.quantizer.losses}.items():
            sums[f"loss/{name}"] = sums.get(f"loss/{name}", 0.0) + float(value) * n
        recon = out.reconstruction
        if modality == "image":
            recon = recon.clamp(0.0, 1.0)
        elif modality == "audio":
            recon = recon.clamp(-1.0, 1.0)
        if tracker is not None:
            tracker.update(x.float(), recon.float())  # images stay on the model's device (LPIPS, FID)
        else:
            squared_error += float((recon.float() - x.float()).square().sum())
            values += x.numel()
    if items == 0:
        raise ValueError("dataset: expected at least one item to evaluate, got none")
    result = {name: total / items for name, total in sums.items()}
    if tracker is not None:
        result.update(tracker.compute())
    else:
        result["mse"] = squared_error / max(values, 1)
    result.update({f"codebook/{k}": v for k, v in usage.compute(sync=False).items()})
    if labels is not None:
        scored = min(items, COLLAPSE_ITEMS)
        result.update(_collapse(torch.cat(embeddings), labels[:scored], torch.cat(item_codes), model))
    item_shape = tuple(getattr(dataset, "item_shape", tuple(x.shape[1:])))
    result["bits_per_item"] = float(model.bits_per_item(item_shape))
    if modality == "audio":
        result["kbps"] = float(getattr(model, "bitrate_kbps")(int(dataset.sample_rate)))  # noqa: B009 (audio models)
    result["items"] = float(items)
    model.train(was_training)
    return result
