"""Hard alignments from attention: for each target piece, the source piece it attends to most, and that piece's word.

    tr = Translator.load("runs/multi30k_en_de")
    best = tr.generate(["A man is riding a bike."], return_attention=True)[0][0]
    hard_alignment(best, "A man is riding a bike.", tr.src_tokenizer)
    # {'src_pieces': ['▁A', '▁man', ...], 'tgt_pieces': ['▁Ein', ...], 'src_piece_index': [0, 1, ...],
    #  'src_word_index': [0, 1, ...]}

Source words are the whitespace-separated words of the input line (``line.split()``); ``src_word_index[j]`` indexes
them. The source EOS (and the target EOS) take no part: every target piece aligns to a real source piece.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seq2seq.tokenizer import Tokenizer


def piece_words(line: str, tokenizer: Tokenizer) -> list[int]:
    """The index in ``line.split()`` of the word each source piece of ``tokenizer.encode([line])`` comes from.

    SentencePiece cuts pieces within whitespace-separated words, so encoding the words one by one gives the same
    pieces. Where its normalization makes the counts disagree (text it drops or splits on, rare), a piece starting
    with ``▁`` starts the next word instead.
    """
    words = line.split()
    pieces = tokenizer.pieces([line])[0]
    per_word = [len(ids) for ids in tokenizer.encode(words)] if words else []
    if sum(per_word) == len(pieces):
        return [word for word, count in enumerate(per_word) for _ in range(count)]
    index, out = -1, []
    for piece in pieces:
        index += piece.startswith("\u2581") or index < 0
        out.append(min(index, len(words) - 1))
    return out


def argmax_source(attention: Any, target_pieces: int, source_pieces: int) -> list[int | None]:
    """Per target piece, the source piece with the largest attention weight (first on ties; None without any).

    Args:
        attention: (target pieces + 1, source pieces + 1) weights, rows and columns ending with EOS (a torch
            tensor or a numpy array); only the first ``target_pieces`` rows and ``source_pieces`` columns are
            looked at.
    """
    if source_pieces == 0:  # a source of no pieces (text SentencePiece drops): nothing to point at
        return [None] * target_pieces
    block = attention[:target_pieces, :source_pieces]
    if hasattr(block, "detach"):  # a torch tensor (fp16 / bf16 under autocast): numpy has no bf16
        block = block.detach().float().cpu().numpy()
    return np.asarray(block, dtype=np.float32).argmax(axis=1).tolist()


def hard_alignment(translation, line: str, src_tokenizer: Tokenizer) -> dict[str, list]:
    """Hard alignment of one :class:`~seq2seq.translation.Translation` (made with ``return_attention=True``) of ``line``.

    Returns ``src_pieces`` / ``tgt_pieces`` (EOS left out; the source as the model read it, so truncated by
    ``decode.max_src_length``), and per target piece ``src_piece_index`` and ``src_word_index``.
    """
    tgt_pieces = list(translation.tgt_pieces[: len(translation.tokens)])
    src_pieces = list(translation.src_pieces[:-1])  # the last one is EOS
    if translation.attention is None:
        if translation.tokens:
            raise ValueError("hard_alignment needs a translation made with return_attention=True")
        return {"src_pieces": src_pieces, "tgt_pieces": [], "src_piece_index": [], "src_word_index": []}
    piece_index = argmax_source(translation.attention, len(tgt_pieces), len(src_pieces))
    words = piece_words(line, src_tokenizer)
    return {"src_pieces": src_pieces, "tgt_pieces": tgt_pieces, "src_piece_index": piece_index,
            "src_word_index": [None if i is None else words[i] for i in piece_index]}

