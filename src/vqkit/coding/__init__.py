"""Entropy coding of codes: real bitstreams, so a tokenizer's effective bits become bytes on disk.

* ``CodePrior`` (``prior.py``): per-position code frequencies fitted on a training set's codes, smoothed so
  every code stays codable; saved as safetensors.
* ``encode_codes`` / ``decode_codes`` (``bitstream.py``): range coding under a prior into a versioned,
  checksummed container (its format is specified there); ``write_coded_file`` / ``read_coded_file``.
* ``tokenizer_identity`` (``identity.py``): the hash that ties a prior and its files to one tokenizer.
* ``HeldOutCodedRate`` (``rate.py``): the measured coded bits of an evaluation split.

The coder is ``constriction`` (the ``coding`` extra: ``pip install 'vqkit[coding]'``), imported only when
something is coded, so importing this package does not need it.
"""

from vqkit.coding.backend import available
from vqkit.coding.bitstream import (
    CodedFileError,
    decode_codes,
    encode_codes,
    is_coded_file,
    payload_bits,
    read_coded_file,
    read_header,
    write_coded_file,
)
from vqkit.coding.identity import tokenizer_identity
from vqkit.coding.prior import DEFAULT_FLOOR, CodePrior, count_codes
from vqkit.coding.rate import HeldOutCodedRate

__all__ = [
    "DEFAULT_FLOOR",
    "CodePrior",
    "CodedFileError",
    "HeldOutCodedRate",
    "available",
    "count_codes",
    "decode_codes",
    "encode_codes",
    "is_coded_file",
    "payload_bits",
    "read_coded_file",
    "read_header",
    "tokenizer_identity",
    "write_coded_file",
]
