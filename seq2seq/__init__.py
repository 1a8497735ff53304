"""seq2seq: recurrent encoder-decoder neural machine translation.

The public surface is light to import: torch and friends load only when one of these names is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "Translator": "seq2seq.translator",
    "Translation": "seq2seq.translation",
    "Sampling": "seq2seq.decoding.sampling",
    "hard_alignment": "seq2seq.decoding.alignment",
    "load_config": "seq2seq.config",
}
__all__ = [*_PUBLIC, "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from seq2seq.translation import Translation
    from seq2seq.translator import Translator
    from seq2seq.config import load_config
    from seq2seq.decoding.alignment import hard_alignment
    from seq2seq.decoding.sampling import Sampling


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")
