"""Speed of training and decoding, measured by ``scripts/benchmark.py`` (its command line).

    flops.py      analytic matmul FLOPs of a training step, and FlopCounterMode's count to check them
    machine.py    the machine's GEMM peak (fp32, bf16), its CPU's name, device sync around timings
    variants.py   ``--compare`` variants: config overrides and a compute dtype each
    workload.py   tokenizers, tokenized training split and test sources, shared by variants that agree on them
    training_speed.py  training throughput, peak memory, achieved GFLOP/s against the GEMM peak
    decoding_speed.py  greedy and beam throughput, batch-1 latency
    profiling.py  ``--profile``: torch.profiler's top ops for a training step and a beam batch
    peers.py      ``--peers``: the peers' shared workload, running a harness, the FLOPs and ratios, batch sizes mapped
    joeynmt.py    ``--peers joeynmt``: JoeyNMT 2.3.0's harness output, its batches replayed from its rule
    opennmt.py    ``--peers opennmt``: OpenNMT-py 3.5.1's harness output, its batches from its own reports
    peer_decoding.py  ``--peer-decode``: a peer's model decodes the test split, timed and scored as ours
    report.py     the printed tables and the ratios between variants
"""
