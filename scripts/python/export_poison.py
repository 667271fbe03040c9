"""Exports a tiny TorchScript classifier that fails its whole batch when one
item carries the poison marker, for the failure-isolation tests.

Usage: python export_poison.py OUT_DIR

OUT_DIR receives a model package (model.json + model.pt + labels.txt):
kind classify, input "input" FP32 [-1, 3, 8, 8] (an 8x8 RGB image scaled to
[0, 1], mean 0, std 1), output "logits" [-1, 4], top-4 classes.

The marker: an item whose every value is >= 0.999 (an all-white image, or a
v2 tensor of ones). A batch holding one raises, so every item batched with
it fails unless the server isolates the failure. Answers depend on the item
alone (a linear map), so an item answers the same in any batch. The
server's warm-up batch (values below 0.999 and varied) never holds a marker.
"""

import json
import os
import sys

import torch


class Poisonable(torch.nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False)

    def forward(self, x):
        flat = x.flatten(1)
        if bool((flat >= 0.999).all(1).any()):
            raise RuntimeError("poisoned item in the batch")
        return flat @ self.weight.t() + self.bias


MANIFEST = {
    "name": "poison",
    "version": "1",
    "kind": "classify",
    "file": "model.pt",
    "labels": "labels.txt",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 8, 8]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}],
    "preprocess": {
        "type": "image_classify",
        "resize": 8,
        "crop": 8,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
    },
    "postprocess": {"type": "top_k", "k": 4},
    "weights": "tiny linear classifier that fails on a marker item",
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    module = Poisonable(torch.randn(4, 3 * 8 * 8, generator=g) * 0.1, torch.randn(4, generator=g))
    torch.jit.script(module.eval()).save(os.path.join(out, "model.pt"))
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("zero\none\ntwo\nthree\n")
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(MANIFEST, f, indent=2)
    print(out)


if __name__ == "__main__":
    main()
