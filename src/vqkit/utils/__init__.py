"""Small shared utilities (atomic file writes)."""

from vqkit.utils.atomic import atomic_directory, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_directory", "atomic_write_bytes", "atomic_write_text"]
