"""PyTorch twin of `bench --train`: ms per Adam step of the lab's tiny transformer.

`bench --train --train-peer "python3 peers/train.py"` runs it as `python3 peers/train.py D_MODEL H`
for the shapes of `configs/dk_vs_dmodel.toml` and reads the last line, `H ms_per_step`.

The model is the lab's `TinyTransformer` at those shapes: a token embedding (vocabulary 144: the
recall task with 16 keys of 8 symbols, 16·8 pair tokens and 16 query tokens), no positional
encoding, one pre-norm block (attention without biases and with W_O, then a GELU MLP of width
d_ff = d_model), a final LayerNorm and a linear readout of the last position into 8 classes.
Sequences of 9 tokens, batch 32, Adam at lr 1e-3, and `loss.item()` every step, as the lab's loop
reads the loss every step. The timing skips a warm-up fifth, as `bench` does.
"""

import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, SEQ_LEN, BATCH, CLASSES = 144, 9, 32, 8
STEPS = 200


class Block(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads, self.d_k = n_heads, d_model // n_heads
        self.norm_attention, self.norm_mlp = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.w_q, self.w_k, self.w_v, self.w_o = (
            nn.Linear(d_model, d_model, bias=False) for _ in range(4)
        )
        self.up, self.down = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)

    def forward(self, h):
        batch, n, d_model = h.shape
        x = self.norm_attention(h)
        heads = lambda t: t.view(batch, n, self.n_heads, self.d_k).transpose(1, 2)
        q, k, v = heads(self.w_q(x)), heads(self.w_k(x)), heads(self.w_v(x))  # [b, heads, n, d_k]
        scores = q @ k.transpose(-1, -2) / self.d_k**0.5  # [b, heads, n, n]
        context = torch.softmax(scores, dim=-1) @ v  # [b, heads, n, d_k]
        h = h + self.w_o(context.transpose(1, 2).reshape(batch, n, d_model))  # [b, n, d_model]
        return h + self.down(F.gelu(self.up(self.norm_mlp(h))))


class TinyTransformer(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, d_model)
        self.block = Block(d_model, n_heads)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, CLASSES)

    def forward(self, tokens):
        h = self.block(self.embedding(tokens))  # [b, n, d_model]
        return self.head(self.norm(h)[:, -1])  # [b, classes]


def ms_per_step(d_model, n_heads):
    torch.manual_seed(0)
    model = TinyTransformer(d_model, n_heads)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ_LEN))
    targets = torch.randint(0, CLASSES, (BATCH,))
    warm_up = STEPS // 5
    for step in range(STEPS):
        if step == warm_up:
            start = time.perf_counter()
        loss = F.cross_entropy(model(tokens), targets)
        adam.zero_grad()
        loss.backward()
        adam.step()
        loss.item()
    return (time.perf_counter() - start) * 1e3 / (STEPS - warm_up)


def main(args):
    torch.set_num_threads(int(os.environ.get("ATTENTION_LAB_PEER_THREADS", "2")))
    d_model = args[0] if args else 128
    for n_heads in args[1:] or [1, 4, 16]:
        print(f"{n_heads} {ms_per_step(d_model, n_heads):.3f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
