"""PyTorch twin of `bench`: one forward+backward of an attention block, timed eager and with SDPA.

The block is the one `bench` times: batch 4, d_model 64, one head, Q/K/V/O projections with
biases, no mask, no dropout, loss = mean(context²). `bench --peer "python3 peers/attention.py"`
runs it as `python3 peers/attention.py N` between its own timing slices and reads the last line,
`N eager_ms sdpa_ms`: each the median over repetitions, in milliseconds.

Two threads, as the machines this lab is measured on have; set ATTENTION_LAB_PEER_THREADS to
change it (use the same for both sides of a ratio).
"""

import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

BATCH, D_MODEL = 4, 64
WARM_UP = 3


def block(projections, x, sdpa):
    """Context of one head over x: [batch, n, d_model] -> [batch, n, d_model]."""
    q, k, v = (projections[name](x) for name in "qkv")  # [batch, n, d_model] each
    if sdpa:
        context = F.scaled_dot_product_attention(q, k, v)  # [batch, n, d_model]
    else:
        scores = q @ k.transpose(-1, -2) / D_MODEL**0.5  # [batch, n, n]
        context = torch.softmax(scores, dim=-1) @ v  # [batch, n, d_model]
    return projections["o"](context)


def median_ms(step, repetitions):
    for _ in range(WARM_UP):
        step()
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(sizes):
    torch.set_num_threads(int(os.environ.get("ATTENTION_LAB_PEER_THREADS", "2")))
    torch.manual_seed(0)
    projections = {name: torch.nn.Linear(D_MODEL, D_MODEL, bias=True) for name in "qkvo"}
    for n in sizes:
        x = torch.randn(BATCH, n, D_MODEL)
        # About two million score entries per size: enough repetitions at small n, few at large.
        repetitions = max(5, 2_000_000 // (n * n))
        eager, sdpa = (
            median_ms(lambda: block(projections, x, s).pow(2).mean().backward(), repetitions)
            for s in (False, True)
        )
        print(f"{n} {eager:.3f} {sdpa:.3f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [16, 64, 128, 512, 1024])
