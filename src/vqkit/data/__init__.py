"""Data. ``synthetic``: the collapse study's Gaussian clusters (local-file loaders come with the harness)."""

from vqkit.data.synthetic import gaussian_clusters

__all__ = ["gaussian_clusters"]
