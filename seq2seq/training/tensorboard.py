"""TensorBoard scalars of a training run (``train.tensorboard: true`` / ``--tensorboard``).

Every record the run appends to ``train_log.jsonl`` is also written, as scalars at its ``step``, to event files
under ``OUT/tensorboard/`` with ``torch.utils.tensorboard`` (view them with ``tensorboard --logdir OUT``). The tags
follow what JoeyNMT and fairseq users look for:

===========================  ==================================================================================
``train/loss``, ``train/ppl``  mean per-token training loss (label-smoothed) and its perplexity over the window
``train/lr``                   learning rate of the step
``train/tokens_per_s``         target tokens per second (``train/src_tgt_tokens_per_s``: source + target)
``valid/loss``, ``valid/ppl``  validation loss and perplexity
``valid/bleu``, ``valid/chrf`` validation BLEU and chrF (greedy, sacreBLEU)
``valid/average_weights``      which weights were validated and kept: 1 = the weight average, 0 = the raw weights
``valid/raw_bleu``, ``valid/average_bleu``  both candidates' BLEU (with ``train.ema_decay`` > 0 only)
===========================  ==================================================================================

A resumed run adds a new event file to the same directory; TensorBoard shows both as one run. ``tensorboard`` is an
optional dependency: ``pip install 'seq2seq[tensorboard]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seq2seq.training import TrainingError

#: subdirectory of the run directory holding the event files
TENSORBOARD_DIR = "tensorboard"

#: (record type, train_log.jsonl key) -> TensorBoard tag
SCALAR_TAGS: dict[tuple[str, str], str] = {
    ("train", "loss"): "train/loss",
    ("train", "ppl"): "train/ppl",
    ("train", "lr"): "train/lr",
    ("train", "tokens_per_s"): "train/tokens_per_s",
    ("train", "src_tgt_tokens_per_s"): "train/src_tgt_tokens_per_s",
    ("valid", "val_loss"): "valid/loss",
    ("valid", "val_ppl"): "valid/ppl",
    ("valid", "val_bleu"): "valid/bleu",
    ("valid", "val_chrf"): "valid/chrf",
    ("valid", "raw_bleu"): "valid/raw_bleu",
    ("valid", "average_bleu"): "valid/average_bleu",
}


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars ``{tag: value}`` of one ``train_log.jsonl`` record (none for other record types)."""
    kind = record.get("type")
    scalars = {tag: float(record[key]) for (rtype, key), tag in SCALAR_TAGS.items() if rtype == kind and key in record}
    if kind == "valid" and "weights" in record:
        scalars["valid/average_weights"] = 1.0 if record["weights"] == "average" else 0.0
    return scalars


class TensorBoardLog:
    """A context manager: ``with TensorBoardLog(out_dir, enabled) as tb: tb.write(record)``.

    Built before the run prepares its data, so that a missing ``tensorboard`` package stops it at once; the writer
    is opened on entering. Disabled (``enabled=False``, e.g. the ranks other than 0), it enters as None.
    """

    def __init__(self, out_dir: str | Path, enabled: bool) -> None:
        self.log_dir = Path(out_dir) / TENSORBOARD_DIR
        self.enabled = enabled
        self.writer = None
        if enabled:
            try:
                import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it, and says so less clearly)
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError as err:
                raise TrainingError(f"train.tensorboard = true (--tensorboard) needs the tensorboard package ({err}); "
                                    "install the extra with `pip install 'seq2seq[tensorboard]'` (or `pip install "
                                    "tensorboard`), or train without --tensorboard") from None

    def __enter__(self) -> "TensorBoardLog | None":
        if not self.enabled:
            return None
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        return self

    def write(self, record: dict[str, Any]) -> None:
        """Add the scalars of one ``train_log.jsonl`` record at its step (flushed at once, like the JSON log)."""
        for tag, value in scalars_of(record).items():
            self.writer.add_scalar(tag, value, global_step=int(record["step"]))
        self.writer.flush()

    def __exit__(self, *exc_info) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
