"""Evaluation metrics: how close a reconstruction is to its input, accumulated over batches.

* ``image``: ``ImageMetrics`` (MSE, PSNR, SSIM, MS-SSIM, and LPIPS / FID when asked for);
* ``audio``: ``AudioMetrics`` (LSD, mel and multi-resolution STFT distances, SI-SDR, chroma similarity,
  spectrogram PSNR / SSIM, STOI and PESQ with the ``audio`` extra);
* ``lpips`` and ``fid``: the learned metrics, whose pinned weights come from installed carrier packages.

These belong to the training and evaluation harness. Import each module explicitly (``from
vqkit.metrics.eval.image import ImageMetrics``): this package imports none of them, so ``import vqkit.metrics``
stays free of their weights and extras. The code statistics are in ``vqkit.metrics.codes``.
"""
