"""Evaluation of a tokenizer on a dataset split: reconstruction metrics, codebook diagnostics, rate.

``evaluate`` runs the model in eval mode over the split (or its first ``eval.max_items`` items) and returns one
flat ``{name: float}``:

* the modality's metrics (``vqkit.metrics.eval.image.ImageMetrics`` / ``vqkit.metrics.eval.audio.AudioMetrics``; vectors
  get ``mse``); reconstructions of images are clamped to [0, 1] and of audio to [-1, 1] first, as a decoder's
  output would be when written to a file;
* ``codebook/...``: ``CodebookUsage`` over every code of the split (utilization, perplexity, dead codes,
  effective and nominal bits per vector; per position their means, and where every position indexes one
  shared codebook, ``codebook/shared_utilization``, ``shared_perplexity`` and ``shared_dead_codes`` of the
  pooled counts: the whole codebook's usage);
* ``bits_per_item`` (and ``kbps`` for audio) from the model's latent shape and the quantizer's rate;
* ``coded_bits_per_item`` and ``codebook/coded_bits`` (per vector): the measured size of the split's codes
  range-coded under a prior that did not see them (``vqkit.coding.HeldOutCodedRate``: two-fold cross-fitting
  by item), where the ``coding`` extra is installed; not in quick evaluations;
* ``loss`` and ``loss/<term>``: the weighted training objective and its terms, means over items;
* ``collapse/...`` where the dataset has ``labels`` (classes, clusters): the collapse study's scores
  (``vqkit.metrics.collapse_scores``) on the encoder outputs, one flattened row per item (the first
  ``COLLAPSE_ITEMS``), and, where an item is one code, the tokens-collapse scores; not in quick evaluations.

``unquantized=True`` evaluates the continuous model (``Tokenizer.forward_unquantized``: the quantizer
skipped), a bench's ceiling: the modality's metrics, the loss, and ``bits_per_item`` as the latent's float32
values cost (32 bits each); no code usage, no coded rate, no collapse scores of codes.

``quick=True`` (the periodic validation inside training) skips the expensive metrics (LPIPS, FID, STOI, PESQ)
and looks at most at 1,024 items.
"""

from __future__ import annotations

from typing import Any

import torch

from vqkit.metrics.codes.usage import CodebookUsage
from vqkit.models.base import Tokenizer, TokenizerOutput
from vqkit.train.batches import batches
from vqkit.train.cell_rates import CellRates
from vqkit.train.config import RunConfig
from vqkit.train.log import loss_terms
from vqkit.train.progress import progress as make_progress

QUICK_ITEMS = 1024
# The collapse scores hold every scored item's flattened encoder output on the host (a 16x16x256 latent is
# 256 KiB per item), so they are computed on the first COLLAPSE_ITEMS items, whatever the evaluation's size.
COLLAPSE_ITEMS = 10_000


def _metric_tracker(modality: str, dataset: Any, config: RunConfig, quick: bool) -> Any:
    if modality == "image":
        from vqkit.metrics.eval.image import ImageMetrics

        return ImageMetrics(
            lpips=None if quick else config.eval.lpips, fid_samples=0 if quick else config.eval.fid_samples
        )
    if modality == "audio":
        from vqkit.metrics.eval.audio import AudioMetrics

        return AudioMetrics(
            int(dataset.sample_rate), stoi=config.eval.stoi and not quick, pesq=config.eval.pesq and not quick
        )
    return None


def _collapse(
    embeddings: torch.Tensor, labels: torch.Tensor, codes: torch.Tensor, model: Tokenizer
) -> dict[str, float]:
    from vqkit.metrics.codes.collapse import collapse_scores

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
    num_quantizers: int | None = None,
    progress: bool = False,
    unquantized: bool = False,
) -> dict[str, float]:
    """The metrics of ``model`` on ``dataset`` (see the module docstring); the model's mode is restored.

    ``num_quantizers=k`` evaluates the reconstruction from the first ``k`` residual levels
    (``Tokenizer.forward_levels``; no quantizer loss terms), at that prefix's rate. ``progress``: report the
    batches done (``vqkit.train.progress``: a bar on a terminal, else a line per tenth). ``unquantized``: the
    continuous model (module docstring)."""
    if unquantized and num_quantizers is not None:
        raise ValueError(f"num_quantizers: expected None for an unquantized evaluation, got {num_quantizers}")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = _Totals(model, dataset, config, device, quick, num_quantizers, unquantized)
    limit = _item_limit(config, quick)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    size = config.eval.batch_size
    with make_progress(-(-count // size), desc="eval", unit="batch", enabled=progress) as bar:
        for x in batches(dataset, size, limit):
            x = x.to(device)
            totals.update(x, _forward(model, x, num_quantizers, unquantized))
            bar.update(1)
    result = totals.compute(model)
    if unquantized:  # the latent at float32: what the continuous model would have to send
        result["bits_per_item"] = 32.0 * totals.latent_values
    else:
        result.update(_rate(model, dataset, totals.item_shape, num_quantizers))
    result["items"] = float(totals.items)
    model.train(was_training)
    return result


def _forward(
    model: Tokenizer, x: torch.Tensor, num_quantizers: int | None, unquantized: bool
) -> TokenizerOutput:
    if unquantized:
        return model.forward_unquantized(x)
    return model(x) if num_quantizers is None else model.forward_levels(x, num_quantizers)


def metric_sections(result: dict[str, float]) -> dict[str, dict[str, float]]:
    """An evaluation's flat result in the three groups a reader wants apart.

    * ``summary``: the modality's metrics, rate, ``loss``, and the whole-codebook diagnostics
      (``codebook/<name>``);
    * ``terms``: the loss terms (``loss/<term>``) and the collapse scores (``collapse/<name>``);
    * ``positions``: the per-code-position values ``CodebookUsage`` adds when there are several codes per
      vector (``codebook/<name>/<j>``).

    The one place that reads structure from these names.
    """
    sections: dict[str, dict[str, float]] = {"summary": {}, "terms": {}, "positions": {}}
    for name, value in result.items():
        depth = name.count("/")
        if name.startswith("codebook/"):
            sections["summary" if depth == 1 else "positions"][name] = value
        else:
            sections["summary" if depth == 0 else "terms"][name] = value
    return sections


def _item_limit(config: RunConfig, quick: bool) -> int | None:
    """How many items to evaluate: ``eval.max_items`` (None: all), at most ``QUICK_ITEMS`` when ``quick``."""
    limit = config.eval.max_items
    return min(limit or QUICK_ITEMS, QUICK_ITEMS) if quick else limit


def _as_written(recon: torch.Tensor, modality: str) -> torch.Tensor:
    """A reconstruction clamped as a decoder's output is when written to a file ([0, 1] images, [-1, 1] audio)."""
    if modality == "image":
        return recon.clamp(0.0, 1.0)
    if modality == "audio":
        return recon.clamp(-1.0, 1.0)
    return recon


def _coded_rate(alphabet_sizes: tuple[int, ...], quick: bool) -> Any:
    """The measured entropy-coded rate's accumulator, where the ``coding`` extra is installed (else None)."""
    from vqkit.coding import HeldOutCodedRate, available
    from vqkit.coding.prior import MAX_ALPHABET

    if quick or not available() or max(alphabet_sizes) > MAX_ALPHABET:
        return None
    return HeldOutCodedRate(alphabet_sizes)


def _code_trackers(
    q: Any, width: int, device: torch.device, quick: bool
) -> tuple[CodebookUsage, CellRates | None, Any]:
    """What counts the first ``width`` code positions: their usage (and, where every position indexes one shared
    codebook, LooC's or shared residual VQ's, the whole codebook's), and their coded rate: per cell for codes
    shared by a grid's cells (multi-scale VQ: counted once per cell, ``cell_rates``), else per position."""
    usage = CodebookUsage(q.alphabet_sizes[:width], shared_codebook=q.shares_codebook).to(device)
    if q.shared_codes:
        return usage, CellRates(q, width, lambda sizes: _coded_rate(sizes, quick)), None
    return usage, None, _coded_rate(q.alphabet_sizes[:width], quick)


class _Totals:
    """What the evaluation accumulates over batches: loss sums, the modality's metric tracker (or the squared
    error of vectors), code usage, and the first ``COLLAPSE_ITEMS`` embeddings and codes of labelled data."""

    def __init__(
        self,
        model: Tokenizer,
        dataset: Any,
        config: RunConfig,
        device: torch.device,
        quick: bool,
        num_quantizers: int | None = None,
        unquantized: bool = False,
    ):
        self.modality = getattr(dataset, "modality", "vector")
        self.tracker = _metric_tracker(self.modality, dataset, config, quick)
        q = model.quantizer
        width = q.codes_per_vector if num_quantizers is None else q.level_widths()[num_quantizers - 1]
        self.usage: CodebookUsage | None = None  # none for the continuous model: it has no codes
        self.cells: CellRates | None = None
        self.coded: Any = None
        if not unquantized:
            self.usage, self.cells, self.coded = _code_trackers(q, width, device, quick)
        # The collapse scores of the embeddings need codes of their own for tokens collapse; a continuous
        # model has none, so it gets none of them.
        self.labels = None if quick or unquantized else getattr(dataset, "labels", None)
        self.latent_values = 0  # values of one item's latent (the continuous model's rate)
        self.sums: dict[str, float] = {}
        self.squared_error, self.values, self.items = 0.0, 0, 0
        self.embeddings: list[torch.Tensor] = []
        self.item_codes: list[torch.Tensor] = []
        self.dataset_item_shape = getattr(dataset, "item_shape", None)
        self.last_item_shape: tuple[int, ...] = ()

    def update(self, x: torch.Tensor, out: TokenizerOutput) -> None:
        if self.usage is not None:
            self.usage.update(out.quantizer.codes)
        if out.latent is not None:
            self.latent_values = out.latent[0].numel()
        if self.coded is not None:
            self.coded.update(out.quantizer.codes)
        if self.cells is not None:
            self.cells.update(out.quantizer.codes)
        n = x.shape[0]
        keep = min(n, COLLAPSE_ITEMS - self.items)
        if self.labels is not None and keep > 0:
            assert out.latent is not None  # every Tokenizer.forward returns its encoder output
            self.embeddings.append(out.latent[:keep].flatten(1).float().cpu())
            self.item_codes.append(out.quantizer.codes[:keep].reshape(keep, -1).cpu())
        self.items += n
        for name, value in loss_terms(out).items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * n
        recon = _as_written(out.reconstruction, self.modality)
        if self.tracker is not None:
            self.tracker.update(x.float(), recon.float())  # images stay on the model's device (LPIPS, FID)
        else:
            self.squared_error += float((recon.float() - x.float()).square().sum())
            self.values += x.numel()
        self.last_item_shape = tuple(x.shape[1:])

    @property
    def item_shape(self) -> tuple[int, ...]:
        """The dataset's ``item_shape``, else that of the items evaluated."""
        shape = self.dataset_item_shape
        return tuple(shape) if shape is not None else self.last_item_shape

    def compute(self, model: Tokenizer) -> dict[str, float]:
        if self.items == 0:
            raise ValueError("dataset: expected at least one item to evaluate, got none")
        result = {name: total / self.items for name, total in self.sums.items()}
        if self.tracker is not None:
            result.update(self.tracker.compute())
        else:
            result["mse"] = self.squared_error / max(self.values, 1)
        if self.usage is not None:
            result.update({f"codebook/{k}": v for k, v in self.usage.compute(sync=False).items()})
        coded = self.coded.compute() if self.coded is not None else {}
        if coded:
            result["codebook/coded_bits"] = coded["coded_bits"]
            result["coded_bits_per_item"] = coded["coded_bits_per_item"]
        if self.cells is not None:
            result.update(self.cells.compute())
        if self.labels is not None:
            scored = min(self.items, COLLAPSE_ITEMS)
            embeddings, codes = torch.cat(self.embeddings), torch.cat(self.item_codes)
            result.update(_collapse(embeddings, self.labels[:scored], codes, model))
        return result


def _rate(
    model: Tokenizer, dataset: Any, item_shape: tuple[int, ...], num_quantizers: int | None = None
) -> dict[str, float]:
    """``bits_per_item``, and ``kbps`` for audio (of the first ``num_quantizers`` levels when given)."""
    rate = {"bits_per_item": float(model.bits_per_item(item_shape, num_quantizers))}
    if getattr(dataset, "modality", "vector") == "audio":
        kbps = getattr(model, "bitrate_kbps")  # noqa: B009 (audio models)
        rate["kbps"] = float(kbps(int(dataset.sample_rate), num_quantizers))
    return rate
