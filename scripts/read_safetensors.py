#!/usr/bin/env python3
"""Reads a .safetensors file as the format defines it, with no library of ours or Burn's:
8 bytes of little-endian header length, that many bytes of JSON header (each tensor's dtype,
shape and byte range, and "__metadata__"), then the tensors' raw bytes, which numpy reads.

    python3 scripts/read_safetensors.py results/scaling/<run-id>/models/<name>.safetensors

prints one JSON object: {"metadata": {...}, "tensors": {name: {"dtype", "shape", "values"}}},
the values flattened in row-major order. The test suite compares them with the model's own.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "U8": "u1", "BOOL": "?"}


def read(path):
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    data = blob[8 + length :]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        values = np.frombuffer(data[begin:end], dtype=DTYPES[entry["dtype"]])
        tensors[name] = {
            "dtype": entry["dtype"],
            "shape": entry["shape"],
            "values": values.reshape(entry["shape"]).ravel().tolist(),
        }
    return {"metadata": metadata, "tensors": tensors}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: read_safetensors.py FILE.safetensors")
    json.dump(read(sys.argv[1]), sys.stdout)
