"""The range coder behind ``vqkit.coding``: ``constriction``, an optional extra imported only when used."""

from __future__ import annotations

from types import ModuleType

EXTRA_HINT = "pip install 'vqkit[coding]' (the constriction package)"


def constriction() -> ModuleType:
    """The ``constriction`` module, or an ``ImportError`` naming the ``coding`` extra that provides it."""
    try:
        import constriction as module
    except ImportError as err:
        raise ImportError(f"entropy coding needs the coding extra: {EXTRA_HINT}") from err
    return module


def available() -> bool:
    """Whether entropy coding can run here (``constriction`` imports)."""
    try:
        constriction()
    except ImportError:
        return False
    return True
