"""Small shared utilities: atomic file writes, output folders that never lose a user's files (``publish``,
``folders``, ``manifest``, ``names``) and timing."""

from vqkit.utils.atomic import atomic_directory, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_directory", "atomic_write_bytes", "atomic_write_text"]
