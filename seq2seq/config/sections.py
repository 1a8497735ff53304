"""The config's five sections as dataclasses: every key, its type, its default and what it means.

The defaults are the measured 20-minute CPU recipe (configs/own_corpus.yaml and configs/multi30k_en_de.yaml hold
the same values; tests/test_config.py checks it), so a run without ``--config`` gets what the recipe gets; the
corpus, its languages and its test splits come from the data. The 2015-style baseline the defaults were before
is configs/baseline_2015.yaml.

``data``, ``tokenizer``, ``model``, ``train`` and ``decode`` make a :class:`Config`, which is saved with every model
(``config.yaml``) and is what rebuilds it. Reading YAML and overrides is in seq2seq/config/loading.py, the range
checks in seq2seq/config/checks.py.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

#: upper limits on decoding work, so that a tampered config.yaml (or a typo) cannot ask for an enormous decode: the
#: work of one batch grows with batch_size * beam_size * (max_len_a * source length + max_len_b)
MAX_BEAM_SIZE = 100
MAX_DECODE_BATCH_SIZE = 4096
MAX_LEN_A = 10.0
MAX_LEN_B = 1000
#: most samples one input may ask for (``--sampling --nbest``, ``generate(texts, nbest=..., sampling=...)``)
MAX_SAMPLES = MAX_BEAM_SIZE

#: compute dtype names: ``auto`` (measured on the machine at hand, seq2seq/dtype_auto.py), then most exact first
ComputeDtype = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
DTYPES: tuple[str, ...] = typing.get_args(ComputeDtype)


class ConfigError(ValueError):
    """A user-facing configuration problem (bad key, bad type, impossible value)."""


@dataclass
class DataConfig:
    #: a directory of ``{split}.{lang}[.gz]`` files, a local `datasets` directory, or a hub dataset name
    path: str = "bentrevett/multi30k"
    src_lang: str = "en"
    tgt_lang: str = "de"
    train_split: str = "train"
    valid_split: str = "val"
    #: the splits scored at the end of training; null (the default): the corpus's own test splits, every split
    #: besides the training and validation ones (none for a TSV file); [] = none
    test_splits: list[str] | None = None
    #: explicit files per split, e.g. ``{train: [corpus.en, corpus.de], val: [dev.tsv]}`` (a pair of line-aligned
    #: files, or one TSV file of source<TAB>target lines); they are the whole corpus and override ``path``
    files: dict[str, list[str]] = field(default_factory=dict)
    #: pairs held out of the training split for validation when the corpus has no ``valid_split`` (at most a tenth
    #: of the training pairs; chosen with ``train.seed``, saved in the run directory as held_out.{lang})
    held_out_pairs: int = 1000
    #: cleaning of the training split before training (seq2seq/cleaning.py; validation and test are never
    #: filtered); what each filter removed is in the log and in the run's cleaning.json. Exact duplicate pairs
    #: (the first kept):
    clean_duplicates: bool = True
    #: pairs whose target is the source copied (equal up to case and spacing)
    clean_copies: bool = True
    #: pairs whose longer side has more than this many times the characters of the shorter one, each counted + 1
    #: (0 = off)
    clean_max_ratio: float = 3.0
    #: pairs where less than this share of one side's letters is in its language's script (Latin for en/de/fr/cs,
    #: Cyrillic for ru, ...; languages of unknown script are not checked; 0 = off)
    clean_min_script: float = 0.5
    #: training pairs longer than this many pieces (either side, before BOS/EOS) are dropped
    max_length: int = 50
    #: where tokenized corpora are cached as Arrow files
    cache_dir: str = "~/.cache/seq2seq"
    #: processes that tokenize the training corpus (0 = auto: all cores from 100,000 pairs on, else one)
    num_workers: int = 0


#: tokenizer.* keys that change how training text is segmented, not the trained SentencePiece models
SEGMENTATION_SAMPLING_KEYS = ("sample_alpha", "bpe_dropout")


@dataclass
class TokenizerConfig:
    type: Literal["unigram", "bpe"] = "unigram"
    #: pieces per language (plus 256 byte pieces with ``byte_fallback``); 2,000 won the 20-minute sweep on
    #: Multi30k's 29,000 pairs: compare larger ones on the validation split for a larger corpus
    vocab_size: int = 2000
    #: one vocabulary for both languages (trained on both sides) instead of one per language
    joint: bool = False
    character_coverage: float = 1.0
    #: characters the pieces do not cover are spelled as UTF-8 byte pieces (SentencePiece ``byte_fallback``), so
    #: no input character becomes ``<unk>`` and any text can be produced; adds 256 byte pieces to ``vocab_size``
    #: (the learned pieces stay ``vocab_size`` minus the specials). Models trained before keep their tokenizers
    byte_fallback: bool = True
    #: sentences sampled for SentencePiece training (0 = all); peak memory grows with it: ~2.2 GB at 500,000
    #: sentences of ~25 words, ~3.6 GB at 1,000,000 (README: Large corpora)
    input_sentence_size: int = 500_000
    #: strings kept as one piece wherever they occur (SentencePiece user_defined_symbols), e.g. ``["<2de>"]``
    user_symbols: list[str] = field(default_factory=list)
    #: subword regularization for ``type: unigram`` (Kudo 2018, arXiv 1804.10959): every training epoch samples
    #: each sentence's segmentation from the unigram lattice with this smoothing exponent (SentencePiece
    #: ``enable_sampling``, ``nbest_size=-1``; smaller is more random, the paper used 0.1-0.5). 0 = off: the best
    #: segmentation. Validation, test and translation always use the best segmentation (seq2seq/segmentation.py)
    sample_alpha: float = 0.0
    #: BPE-dropout for ``type: bpe`` (Provilkov et al. 2020, arXiv 1910.13267): the probability of skipping each
    #: merge when a training sentence is segmented, drawn anew every epoch (the paper used 0.1). 0 = off
    bpe_dropout: float = 0.0

    @property
    def sampling(self) -> float:
        """The SentencePiece ``alpha`` that training batches are segmented with (unigram smoothing or BPE
        dropout probability, by ``type``); 0 when every segmentation is the best one."""
        return self.sample_alpha if self.type == "unigram" else self.bpe_dropout

    def training_settings(self) -> dict[str, Any]:
        """The settings the SentencePiece models are trained with (what keys cached or reused tokenizers):
        everything but the segmentation sampling, which only changes how training text is segmented."""
        return {k: v for k, v in asdict(self).items() if k not in SEGMENTATION_SAMPLING_KEYS}


@dataclass
class ModelConfig:
    rnn_type: Literal["gru", "lstm"] = "gru"
    #: ``fused``: torch's cuDNN/oneDNN kernels; ``reference``: textbook cells from seq2seq/cells.py
    rnn_impl: Literal["fused", "reference"] = "fused"
    emb_size: int = 256
    encoder_hidden_size: int = 256
    encoder_layers: int = 1
    bidirectional: bool = True
    decoder_hidden_size: int = 512
    decoder_layers: int = 1
    attention: Literal["bahdanau", "luong_dot", "luong_general"] = "bahdanau"
    #: Luong's input feeding (the previous attention context into the decoder RNN; the 2015 baseline). Off: the
    #: decoder runs over all target positions in one fused call in training, and learned more per minute
    input_feeding: bool = False
    #: which decoder layer queries the attention: ``top`` (Luong), or ``bottom`` with the context fed to the layers
    #: above it (GNMT, Wu et al. 2016; RNMT+); ``bottom`` needs ``decoder_layers >= 2``, and without input feeding
    #: teacher forcing then runs every decoder layer over all positions in one call
    attention_layer: Literal["top", "bottom"] = "top"
    bridge: Literal["bridge", "last", "zero"] = "bridge"
    dropout: float = 0.2
    tie_embeddings: bool = False
    #: per-gate layer normalization in the decoder's RNN layers (Ba et al. 2016; RNMT+, Chen et al. 2018)
    layer_norm: bool = False
    #: residual connections between stacked encoder and decoder layers, from the second layer up (RNMT+)
    residual: bool = False
    #: attention heads (RNMT+'s multi-head additive attention); must divide the attention and memory sizes
    attention_heads: int = 1
    #: probability of dropping a whole source or target token embedding in training (Gal and Ghahramani 2016;
    #: Sennrich and Zhang 2019 used 0.3 on small corpora)
    word_dropout: float = 0.0


@dataclass
class TrainConfig:
    seed: int = 1234
    #: fine-tuning: start this new run from a trained model (a model directory or ``hf:ORG/NAME[@REVISION]``): its
    #: weights, tokenizers and architecture, with a fresh optimizer and this run's schedule (``--init-from``;
    #: seq2seq/training/init_from.py). "" = a new model from random weights
    init_from: str = ""
    #: padded source + target positions per batch
    max_tokens: int = 2048
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    #: ``linear`` / ``cosine``: warmup, then anneal to ``min_lr`` exactly at the end of the budget
    #: (``max_steps`` / ``max_minutes``); ``plateau``: warmup then decay on a validation-BLEU plateau;
    #: ``inverse_sqrt``; ``constant`` (+ warmup)
    scheduler: Literal["linear", "cosine", "plateau", "inverse_sqrt", "constant"] = "linear"
    warmup_steps: int = 100
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    accumulate: int = 1
    #: decay of an exponential moving average of the weights, validated beside the raw weights and kept as
    #: the model when it scores higher (0 = off; 0.999 averages over about the last 1,000 steps)
    ema_decay: float = 0.998
    #: probability of feeding the gold token at each step (< 1 = scheduled sampling)
    teacher_forcing_ratio: float = 1.0
    #: the training budget: stop after this many optimizer steps, epochs or minutes, whichever comes first (0 = no
    #: limit). A config that names none of them trains for 20 minutes; one that sets ``max_steps`` or
    #: ``max_epochs`` (a file or ``--set``, ``--max-steps``) without naming ``max_minutes`` has no time limit
    #: (seq2seq/config/loading.py; a Config built in Python keeps the 20 minutes unless told otherwise)
    max_steps: int = 0
    max_epochs: int = 0
    max_minutes: float = 20.0
    #: validate every this many steps, and at the end of the budget (a periodic validation less than half an
    #: interval before the budget's end is skipped: the final one follows)
    valid_every: int = 1000
    #: also save the training state (``last/``) every this many minutes of training, so that a killed run loses
    #: at most this much work (0 = save only at validation, at the end and on Ctrl-C / SIGTERM)
    save_every: float = 5.0
    #: validations without a BLEU improvement before stopping (0 = never stop early: the budget ends the run)
    patience: int = 0
    #: validation sentences decoded for BLEU (0 = all)
    valid_bleu_sentences: int = 0
    log_every: int = 50
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: compute dtype under autocast; the loss, the recurrent state and the gate arithmetic stay fp32.
    #: ``auto``: the fastest on this machine for this model, measured once and cached (seq2seq/dtype_auto.py):
    #: fp32 or bf16 on a CPU; tf32, bf16 or fp16 (with a grad scaler) on CUDA
    dtype: ComputeDtype = "auto"
    #: CPU threads (0 = all cores)
    threads: int = 0
    #: consecutive non-finite losses tolerated (each skipped) before training aborts
    max_bad_steps: int = 5
    #: compile the decoder step with torch.compile (faster steps after a one-off compile of about a minute)
    compile: bool = False
    #: also write the train_log.jsonl scalars as TensorBoard event files under OUT/tensorboard/ (needs the
    #: ``tensorboard`` extra; seq2seq/training/tensorboard.py)
    tensorboard: bool = False
    #: under torchrun: minutes a rank waits for the others (rank 0's data preparation and validation included)
    #: before giving up with an error
    dist_timeout: float = 30.0


@dataclass
class DecodeConfig:
    beam_size: int = 5
    #: hypotheses may be up to ``max_len_a * source_length + max_len_b`` pieces long
    max_len_a: float = 1.5
    max_len_b: int = 10
    #: GNMT length penalty exponent alpha in ``((5 + len) / 6) ** alpha`` (0 = raw log-probability)
    length_penalty: float = 1.0
    #: fewer output pieces than this cannot end (EOS is banned): 1 = a non-empty source always gets at least one
    #: piece; 0 allows none. A piece may still detokenize to nothing (a lone word boundary ``▁``), so 1 does not
    #: promise non-empty text. A model directory's config.yaml keeps the value it was saved with (0 before
    #: this default became 1): edit its ``decode.min_length`` to change it
    min_length: int = 1
    no_repeat_ngram: int = 0
    nbest: int = 1
    #: sentences per batch
    batch_size: int = 64
    #: source lines longer than this many pieces are truncated, with a warning
    max_src_length: int = 250
    #: compute dtype for translation; ``auto`` measures as for training (decoding steps of this batch and beam size)
    dtype: ComputeDtype = "auto"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    def validate(self) -> "Config":
        """Check values that are well-typed but impossible (seq2seq/config/checks.py); raise ConfigError naming
        the key."""
        from seq2seq.config.checks import check_config

        return check_config(self)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
#: SentencePiece's special pieces (seq2seq/tokenizer.py fixes their ids)
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")
