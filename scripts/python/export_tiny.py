"""Exports the tiny TorchScript classifiers the registry tests roll out.

Usage: python export_tiny.py OUT_DIR

Each variant is a model package (model.json + model.pt) in OUT_DIR/<variant>:
a linear classifier over an FP32 vector of 8, 4 classes, input "x" [-1, 8],
output "logits" [-1, 4], no pre/post-processing, served over KServe v2.

- v1:    the baseline weights.
- v2:    other weights (every logit shifted by the same 0.5): the same
         top class and the same probabilities on every input, so a
         promotion passes the drift check.
- drift: the classes permuted: same shapes, every top class different.
- bad:   raises on every input holding a negative value. The server's
         warm-up batch is all non-negative, so it loads and warms up, then
         fails every real request the tests send (they always hold one).
"""

import json
import os
import sys

import torch


class Linear(torch.nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False)

    def forward(self, x):
        return x @ self.weight.t() + self.bias


class FailsOnNegative(Linear):
    def forward(self, x):
        if bool((x < 0).any()):
            raise RuntimeError("this version fails on real inputs")
        return x @ self.weight.t() + self.bias


def manifest(variant):
    return {
        "name": "tiny",
        "version": variant,
        "kind": "classify",
        "file": "model.pt",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}],
        "preprocess": {"type": "none"},
        "postprocess": {"type": "none"},
        "weights": f"tiny linear classifier, variant {variant}",
    }


def main():
    out = sys.argv[1]
    g = torch.Generator().manual_seed(7)
    weight = torch.randn(4, 8, generator=g)
    bias = torch.randn(4, generator=g) * 0.1
    perm = torch.tensor([1, 2, 3, 0])
    variants = {
        "v1": Linear(weight, bias),
        "v2": Linear(weight.clone(), bias + 0.5),
        "drift": Linear(weight[perm].clone(), bias[perm].clone()),
        "bad": FailsOnNegative(weight.clone(), bias.clone()),
    }
    for name, module in variants.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        torch.jit.script(module.eval()).save(os.path.join(d, "model.pt"))
        with open(os.path.join(d, "model.json"), "w") as f:
            json.dump(manifest(name), f, indent=2)
    print(out)


if __name__ == "__main__":
    main()
