"""Helpers shared by several test files (fixtures stay in tests/conftest.py).

- ``cli``: run a ``python -m seq2seq.X`` command line as a subprocess and read its output lines;
- ``runs``: the tiny training config and readers of a run directory (its log, its weights);
- ``scripts``: import a file of scripts/ as a module;
- ``serving``: start ``python -m seq2seq.serve`` on a free port and talk JSON to it;
- ``chromium``: drive a headless Chromium over the DevTools protocol;
- ``tiny_models``: small random models and exact references (teacher-forced scores, every output, GNMT penalty);
- ``model_inputs``: small models and random padded batches for the encoder, attention, decoder and model tests,
  and the reference paths they are checked against;
- ``corpus``: a four-pair English-German corpus for the data and batch tests, and text files written;
- ``faults``: the fault tests' corpora written byte for byte, model directory copies and snapshots, a full disk;
- ``search_calls``: greedy, beam and sampling search called with keyword settings (a ``DecodeOptions`` built here).
"""
