"""seq2seq: recurrent encoder-decoder neural machine translation.

The public surface is light to import: torch and friends load only when a Translator is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Translator", "load_config", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from seq2seq.api import Translator
    from seq2seq.config import load_config


def __getattr__(name: str) -> Any:
    if name == "Translator":
        from seq2seq.api import Translator

        return Translator
    if name == "load_config":
        from seq2seq.config import load_config

        return load_config
    raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")
