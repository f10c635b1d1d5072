"""Output file names from input names: one file per item, no two items on one name.

The rule: an item keeps its input's stem (``shirt.png`` -> ``shirt.wav``) unless another item would get the
same name, compared case-insensitively (macOS and Windows fold case, so ``X.png`` and ``x.png`` are one file
there). Every item of such a group gets its position among the items appended, ``a/x.png``, ``b/x.png`` ->
``x-0.png``, ``x-1.png``; a further ``-1``, ``-2``... follows in the rare case that this name is taken too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import PurePath


def item_stem(source: object, index: int) -> str:
    """The stem of an input name as recorded (only its last component); ``item-<index>`` if it has none."""
    stem = PurePath(str(source)).stem
    return f"item-{index}" if stem in ("", ".", "..") else stem


def unique_names(stems: Sequence[str], suffix: str) -> list[str]:
    """``stem + suffix`` for each item, made unique by the module's rule (unchanged when already unique)."""
    wanted = [f"{stem}{suffix}" for stem in stems]
    counts = Counter(name.casefold() for name in wanted)
    taken = {name.casefold() for name in wanted if counts[name.casefold()] == 1}
    names = []
    for index, (stem, name) in enumerate(zip(stems, wanted, strict=True)):
        if counts[name.casefold()] > 1:
            name, extra = f"{stem}-{index}{suffix}", 0
            while name.casefold() in taken:
                extra += 1
                name = f"{stem}-{index}-{extra}{suffix}"
            taken.add(name.casefold())
        names.append(name)
    return names
