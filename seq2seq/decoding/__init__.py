"""Decoding: id sequences in, hypotheses or scores out, every search mode driven by the decoder's one ``step()``.

- :mod:`~seq2seq.decoding.driver`: sorts sentences by length, decodes them in batches, picks the search;
- :mod:`~seq2seq.decoding.options`: :class:`DecodeOptions`, the settings of one decode (built once, passed by name);
- :mod:`~seq2seq.decoding.search`: greedy search and the one beam-search loop;
- :mod:`~seq2seq.decoding.selection`: :class:`SelectionStrategy`, the interface of beam search's selections;
- :mod:`~seq2seq.decoding.topk`: plain beam search's candidate selection (top 2K, in tensors);
- :mod:`~seq2seq.decoding.live_rows`: the model steps only the rows of sentences not yet done;
- :mod:`~seq2seq.decoding.constrained`: the selection for outputs that must contain given phrases;
- :mod:`~seq2seq.decoding.sampling`: ancestral sampling (temperature, top-k, top-p), seeded per input;
- :mod:`~seq2seq.decoding.hypothesis`: what a search returns, and what it records per step when traced;
- :mod:`~seq2seq.decoding.forced`: forced decoding, the score of a given target;
- :mod:`~seq2seq.decoding.ensemble`: several models averaged in probability space, one step at a time;
- :mod:`~seq2seq.decoding.logits`: the per-step log-probability masks and the length penalty;
- :mod:`~seq2seq.decoding.alignment`: hard source-target alignments from attention;
- :mod:`~seq2seq.decoding.confidence`: the outputs' teacher-forced piece probabilities and confidence features.
- :mod:`~seq2seq.decoding.span_copy`: protected spans and glossary terms carried into translations, or reported.
- :mod:`~seq2seq.decoding.batching`: a line's encoder input and the length-sorted batches (no tensors);
- :mod:`~seq2seq.decoding.numpy_search`, :mod:`~seq2seq.decoding.numpy_beams`, :mod:`~seq2seq.decoding.numpy_rules`,
  :mod:`~seq2seq.decoding.numpy_confidence`: greedy and beam search and the confidence in numpy over the
  onnxruntime graphs, the runtime without torch.
"""
