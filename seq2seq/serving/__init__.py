"""The HTTP service behind ``python -m seq2seq.serve`` (needs the ``serve`` extra: FastAPI and uvicorn).

- :mod:`~seq2seq.serving.app`: the FastAPI application (endpoints, errors, limits, the page under ``static/``);
- :mod:`~seq2seq.serving.schema`: request and reply shapes, request limits, one batch turned into replies;
- :mod:`~seq2seq.serving.dynamic_batcher`: gathers concurrent requests into one decode.
"""
