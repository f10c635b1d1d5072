"""Pure, stateless tensor functions: nearest-code search, k-means, code statistics, FSQ and LFQ math."""

from vqkit.functional import fsq, lfq
from vqkit.functional.kmeans import KMeansResult, kmeans, kmeans_plusplus, lloyd_step
from vqkit.functional.search import SearchResult, nearest_code, pairwise_distances, squared_norms
from vqkit.functional.stats import batch_usage, code_counts, entropy_bits

__all__ = [
    "KMeansResult",
    "SearchResult",
    "batch_usage",
    "code_counts",
    "entropy_bits",
    "fsq",
    "kmeans",
    "kmeans_plusplus",
    "lfq",
    "lloyd_step",
    "nearest_code",
    "pairwise_distances",
    "squared_norms",
]
