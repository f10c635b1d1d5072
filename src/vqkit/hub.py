"""Hub-style folders: ``save_pretrained`` / ``from_pretrained`` for every quantizer and tokenizer.

A folder in the layout of the Hugging Face hub, the files ``huggingface_hub``'s ``PyTorchModelHubMixin``
writes and reads:

* ``config.json``: the constructor arguments, flat (``{"dim": 64, "codebook_size": 1024, ...}``; a tokenizer's
  ``to_config()`` as it is), beside ``"name"`` (the registry name) and a ``"vqkit"`` header ``{"format":
  "vqkit.hub.quantizer", "version": 1, "vqkit_version": ..., "model_card_sha256": ...}``; written as the
  mixin writes it (``json.dumps(config, indent=2, sort_keys=True)``);
* ``model.safetensors``: the ``state_dict`` (header metadata ``{"format": "pt", "vqkit.format": ...}``);
* ``README.md``: the model card (``vqkit.hub_card``): YAML front matter with ``library_name: vqkit`` and tags,
  then the codebook, the rates, and the training data and held-out metrics when the saver gives them.

**Why not a ``ModelHubMixin`` subclass.** ``huggingface_hub`` is an optional extra (``pip install 'vqkit[hub]'``),
and a base class that exists only when it is installed would make the class hierarchy depend on the install.
``PretrainedMixin`` is vqkit's own and writes the mixin's files, so the hub and ``huggingface_hub`` read them
(``tests/test_hub.py`` loads our folder with ``PyTorchModelHubMixin.from_pretrained`` and our card with
``ModelCard.load``). That loader gives a constructor taking ``**kwargs`` every key of ``config.json``: it reads
our folders of the classes without one (the tokenizers, FSQ, LFQ, ...), not those of VQ and its kin, whose
``**codebook_options`` would be given ``"name"`` and ``"vqkit"`` too.

A local folder needs nothing but vqkit; a hub repo id (``"owner/name"``, when no such folder exists) is
downloaded by ``huggingface_hub.snapshot_download`` (an ``ImportError`` saying ``pip install 'vqkit[hub]'``
without it).

Writing follows ``vqkit.utils.publish``'s rules: atomic, into a folder holding other files only with
``overwrite=True``, never at the cost of those files. ``README.md`` counts as vqkit's only while it is the card
vqkit wrote (its SHA-256 is in the header): a card the user edited is kept, as the mixin keeps an existing one.
``from_pretrained`` also reads the folders of ``save_quantizer`` / ``save_tokenizer`` (``weights.safetensors``),
and ``save_pretrained`` over one converts it. This module is core (no quantizer, registry or model imported):
``vqkit.io`` and ``vqkit.models.io`` register the two formats (``register_hub_format``) when vqkit is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from vqkit._version import __version__
from vqkit.hub_card import card_info, render_card
from vqkit.utils.atomic import FileWriter, bytes_writer
from vqkit.utils.folders import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    FolderFormat,
    load_folder,
    load_weights,
    owned_files,
    write_safetensors,
)
from vqkit.utils.publish import Owner, publish_folder

HUB_WEIGHTS_FILE = "model.safetensors"  # huggingface_hub.constants.SAFETENSORS_SINGLE_FILE
MODEL_CARD_FILE = "README.md"
HEADER = "vqkit"
VERSION = 1
HUB_EXTRA = "pip install 'vqkit[hub]'"
ARGUMENT = "pretrained_model_name_or_path"
_DOWNLOADED = [CONFIG_FILE, HUB_WEIGHTS_FILE, WEIGHTS_FILE]  # what loading reads (the card is not needed)
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "name" or "owner/name"

T = TypeVar("T", bound="PretrainedMixin")

__all__ = ["HubFormat", "PretrainedMixin", "pretrained_folder", "read_pretrained", "register_hub_format"]


@dataclass(frozen=True)
class HubFormat:
    """How one kind of module (every quantizer, every tokenizer) is written as a hub-style folder.

    Attributes:
        base: the class whose subclasses use it (``Quantizer``, ``Tokenizer``).
        legacy: the ``save_quantizer`` / ``save_tokenizer`` folder format, still read (and converted on save).
        build: the module from its config as ``to_config()`` returns it (``quantizer_from_config``,
            ``build_model``); fresh weights.
        kwargs_key: where ``to_config()`` keeps the constructor arguments (``"kwargs"``), or ``None`` when they
            sit beside ``"name"`` already; ``config.json`` holds them flat either way.
    """

    base: type
    legacy: FolderFormat
    build: Callable[[dict[str, Any]], nn.Module]
    kwargs_key: str | None = None

    @property
    def kind(self) -> str:
        return self.legacy.kind

    @property
    def format(self) -> str:
        return f"vqkit.hub.{self.kind}"

    @property
    def loader(self) -> str:
        """The class to call ``from_pretrained`` on, as messages and the card name it."""
        return f"vqkit.{self.base.__name__}"

    def owner(self) -> Owner:
        return Owner(
            "save_pretrained", "save_directory", "overwrite=True", lambda folder: _owned(folder, self)
        )


_FORMATS: list[HubFormat] = []


def register_hub_format(fmt: HubFormat) -> None:
    """Make ``fmt.base`` and its subclasses savable and loadable as hub-style folders (a second registration of
    the same base replaces the first)."""
    _FORMATS[:] = [f for f in _FORMATS if f.base is not fmt.base] + [fmt]


def hub_format(cls: type) -> HubFormat:
    """The registered format of ``cls``; ``TypeError`` for a class that is no quantizer or tokenizer."""
    for fmt in _FORMATS:
        if issubclass(cls, fmt.base):
            return fmt
    raise TypeError(f"{cls.__name__} has no hub-style folder format (only quantizers and tokenizers have)")


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained``: hub-style folders for ``Quantizer`` and ``Tokenizer``.

    ``vqkit.hub`` has the layout and the reasons; the methods here are the mixin's API under the names and
    keyword arguments of ``huggingface_hub.ModelHubMixin``.
    """

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        model_card_kwargs: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` into ``save_directory``.

        A new or empty folder, or an earlier output of ``save_pretrained`` (or of ``save_quantizer`` /
        ``save_tokenizer``, which this converts), is replaced atomically. A folder holding other files (an edited
        ``README.md`` included) raises ``FileExistsError`` unless ``overwrite=True``; then vqkit's files are
        replaced one by one and every other file is kept (an edited card stays as it is).

        ``model_card_kwargs``: what the card says beyond the module's own facts, all optional: ``datasets`` (a
        name or a list), ``metrics`` (held-out, name -> number), ``split``, ``license``, ``description``,
        ``repo_id`` (for the card's loading example), ``tags``. Upload the folder with
        ``huggingface_hub.upload_folder``. Raises ``TypeError`` for an unregistered class (no config).
        """
        return write_pretrained(
            cast(nn.Module, self), save_directory, overwrite=overwrite, model_card_kwargs=model_card_kwargs
        )

    @classmethod
    def from_pretrained(
        cls: type[T],
        pretrained_model_name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        force_download: bool = False,
        token: str | bool | None = None,
        local_files_only: bool = False,
        map_location: str | torch.device = "cpu",
    ) -> T:
        """The module saved in a local folder, or in a Hugging Face hub repo (``"owner/name"``), in eval mode.

        A local folder (any ``os.PathLike``, or a string naming an existing folder) is read with vqkit alone:
        ``save_pretrained``'s layout or the older ``save_quantizer`` / ``save_tokenizer`` one. Another string
        of a repo id's form (``"name"``, ``"owner/name"``) is a repo id, downloaded with
        ``huggingface_hub.snapshot_download(repo_id, revision=, cache_dir=, force_download=, token=,
        local_files_only=)`` (those arguments apply to repo ids only). Called on a subclass (``vqkit.VQ``), the
        folder must hold one.

        Raises:
            ImportError: a repo id without huggingface_hub installed (``pip install 'vqkit[hub]'``).
            FileNotFoundError: a path that is no folder.
            ValueError: the config or the weights are missing, corrupt, of another kind or class, or do not
                match each other (the message names the file).
        """
        folder = pretrained_folder(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            token=token,
            local_files_only=local_files_only,
        )
        return cast(T, read_pretrained(folder, cls, map_location))


# ---------------------------------------------------------------------- writing
def write_pretrained(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    model_card_kwargs: Mapping[str, Any] | None = None,
) -> Path:
    """``module.save_pretrained(path)``: the three files, the config (which identifies the folder) last."""
    fmt = hub_format(type(module))
    config = flat_config(module, fmt)
    card = render_card(module, fmt.kind, config, card_info(model_card_kwargs)).encode("utf-8")
    # A card that is there and not the one vqkit wrote (the user edited it) is kept, as ModelHubMixin keeps it.
    keep_card = (Path(path) / MODEL_CARD_FILE).exists() and MODEL_CARD_FILE not in _owned(Path(path), fmt)
    header = {
        "format": fmt.format,
        "version": VERSION,
        "vqkit_version": __version__,
        "model_card_sha256": None if keep_card else hashlib.sha256(card).hexdigest(),
    }
    text = json.dumps({HEADER: header, **config}, indent=2, sort_keys=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in module.state_dict().items()}

    def write_weights(file: Path) -> None:
        write_safetensors(tensors, file, metadata={"format": "pt", "vqkit.format": fmt.format})

    files: dict[str, FileWriter] = {HUB_WEIGHTS_FILE: write_weights}
    if not keep_card:
        files[MODEL_CARD_FILE] = bytes_writer(card)
    files[CONFIG_FILE] = bytes_writer(text.encode("utf-8"))
    return publish_folder(path, files, fmt.owner(), overwrite=overwrite)


def flat_config(module: nn.Module, fmt: HubFormat) -> dict[str, Any]:
    """``config.json``'s payload: ``"name"`` beside the constructor arguments (``TypeError``: unregistered)."""
    config: dict[str, Any] = cast(Any, module).to_config()
    kwargs = config if fmt.kwargs_key is None else config[fmt.kwargs_key]
    reserved = {HEADER} if fmt.kwargs_key is None else {HEADER, "name"}  # "name": the registry name's key
    clash = sorted(reserved & set(kwargs))
    if clash:
        raise TypeError(
            f"{type(module).__name__} takes an argument {clash[0]!r}, a key config.json keeps for vqkit"
        )
    return dict(config) if fmt.kwargs_key is None else {"name": config["name"], **kwargs}


def _owned(folder: Path, fmt: HubFormat) -> set[str]:
    """The files in ``folder`` vqkit wrote in ``fmt``, by their markers (an earlier ``save_quantizer`` output's
    included: saving over it converts it); ``README.md`` only while its content is the card written then."""
    owned = owned_files(folder, fmt.legacy)
    header = _header(folder / CONFIG_FILE)
    if header.get("format") == fmt.format:
        owned.add(CONFIG_FILE)
        digest = header.get("model_card_sha256")
        if isinstance(digest, str) and _sha256(folder / MODEL_CARD_FILE) == digest:
            owned.add(MODEL_CARD_FILE)
    if _weights_marker(folder / HUB_WEIGHTS_FILE) == fmt.format:
        owned.add(HUB_WEIGHTS_FILE)
    return owned


def _header(file: Path) -> dict[str, Any]:
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    header = config.get(HEADER) if isinstance(config, dict) else None
    return header if isinstance(header, dict) else {}


def _weights_marker(file: Path) -> object:
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, SafetensorError):
        return None
    return metadata.get("vqkit.format")


def _sha256(file: Path) -> str | None:
    try:
        return hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError:
        return None


# ---------------------------------------------------------------------- reading
def pretrained_folder(
    source: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local folder ``source`` names: itself, or a hub repo's snapshot (downloaded into the hub's cache)."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{ARGUMENT}: expected a folder or a hub repo id, got {type(source).__name__}")
    if isinstance(source, os.PathLike) or os.path.isdir(source) or not _REPO_ID.fullmatch(source):
        folder = Path(source)
        if not folder.is_dir():
            what = "the file" if folder.exists() else "no folder at"
            raise FileNotFoundError(
                f"{ARGUMENT}: expected a folder written by save_pretrained (or save_quantizer / save_tokenizer) "
                f"or a hub repo id 'owner/name', got {what} {str(source)!r}"
            )
        return folder
    try:
        import huggingface_hub
    except ImportError as err:
        raise ImportError(
            f"{ARGUMENT}: {source!r} is no local folder, so it names a Hugging Face hub repo, and downloading it "
            f"needs huggingface_hub: {HUB_EXTRA}"
        ) from err
    snapshot = huggingface_hub.snapshot_download(
        repo_id=source,
        revision=revision,
        cache_dir=None if cache_dir is None else str(cache_dir),
        force_download=force_download,
        token=token,
        local_files_only=local_files_only,
        allow_patterns=list(_DOWNLOADED),
    )
    return Path(snapshot)


def read_pretrained(folder: Path, cls: type, map_location: str | torch.device = "cpu") -> nn.Module:
    """The module in ``folder`` (either layout), checked to be a ``cls``, on ``map_location``, in eval mode."""
    wanted = hub_format(cls)
    file = folder / CONFIG_FILE
    config = _read_config(file)
    header = config.get(HEADER)
    if isinstance(header, dict):
        fmt = _chosen(
            file, wanted, header.get("format"), [f for f in _FORMATS if f.format == header.get("format")]
        )
        version = header.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
            raise ValueError(
                f"{ARGUMENT}: {str(file)!r} has version {version!r}; this vqkit reads up to {VERSION}"
            )
        module = _build(fmt, _payload(config, fmt), file)
        load_weights(module, folder / HUB_WEIGHTS_FILE, map_location)
        module = module.to(map_location)
    else:  # save_quantizer / save_tokenizer: their own reader, their own checks
        declared = config.get("format")
        fmt = _chosen(file, wanted, declared, [f for f in _FORMATS if f.legacy.format == declared])
        module = load_folder(folder, fmt.legacy, fmt.build, map_location)
    if not isinstance(module, cls):
        raise ValueError(
            f"{ARGUMENT}: {str(folder)!r} holds a {type(module).__name__}, not a {cls.__name__}; load it with "
            f"{fmt.loader}.from_pretrained"
        )
    return module.eval()


def _read_config(file: Path) -> dict[str, Any]:
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{ARGUMENT}: cannot read the vqkit config {str(file)!r}: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{ARGUMENT}: {str(file)!r} is not a vqkit config (a JSON object expected)")
    return config


def _chosen(file: Path, wanted: HubFormat, declared: object, found: list[HubFormat]) -> HubFormat:
    """The format ``file`` declares (``found`` among the registered ones), which must be ``wanted``'s."""
    if not found:
        formats = [f"{f.format!r} (save_pretrained)" for f in _FORMATS] + [
            f"{f.legacy.format!r} ({f.legacy.writer})" for f in _FORMATS
        ]
        raise ValueError(
            f"{ARGUMENT}: {str(file)!r} is not a vqkit config: expected a {HEADER!r} header or a 'format' of "
            f"{', '.join(formats)}, got format={declared!r}"
        )
    if found[0] is not wanted:
        raise ValueError(
            f"{ARGUMENT}: {str(file)!r} holds a vqkit {found[0].kind}, not a {wanted.kind}; load it with "
            f"{found[0].loader}.from_pretrained"
        )
    return wanted


def _payload(config: Mapping[str, Any], fmt: HubFormat) -> dict[str, Any]:
    """What ``fmt.build`` takes, from ``config.json``'s flat keys."""
    flat = {key: value for key, value in config.items() if key != HEADER}
    if fmt.kwargs_key is None:
        return flat
    name = flat.pop("name", None)
    return {"name": name, fmt.kwargs_key: flat}


def _build(fmt: HubFormat, payload: dict[str, Any], file: Path) -> nn.Module:
    try:
        return fmt.build(payload)
    except (ValueError, TypeError, KeyError) as err:
        # A KeyError's str() adds quotes around the message.
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ValueError(f"{ARGUMENT}: the {fmt.kind} config in {str(file)!r} is invalid: {reason}") from err
