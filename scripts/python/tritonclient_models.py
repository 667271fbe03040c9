"""Triton's own Python clients against convoy's real models over KServe v2.

Usage: tritonclient_models.py HTTP_HOST:PORT GRPC_HOST:PORT MODELS_DIR

Over v2 the models take the tensors their TorchScript programs take (the
v1 routes do the decoding, tokenizing and post-processing): ResNet-50 an
FP32 [N,3,224,224] image batch and answers FP32 logits [N,1000]; MiniLM
INT64 input_ids and attention_mask [N,T] and answers FP32 embeddings
[N,384]; YOLOv8n an FP32 [N,3,640,640] letterboxed batch and answers the
raw FP32 head [N,84,8400]. Each is checked against the reference outputs
that scripts/export_models.py recorded with PyTorch, over HTTP with binary
tensors (tritonclient's default), HTTP with JSON tensors, and gRPC; then a
wrong shape is refused. Exits non-zero on the first failed check.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

http_url, grpc_url, models_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])

# What the server's v2 metadata must say: (name, datatype, shape) per tensor.
EXPECTED = {
    "resnet50": ([("input", "FP32", [-1, 3, 224, 224])], [("logits", "FP32", [-1, 1000])]),
    "minilm": (
        [("input_ids", "INT64", [-1, -1]), ("attention_mask", "INT64", [-1, -1])],
        [("embedding", "FP32", [-1, 384])],
    ),
    "yolov8n": ([("images", "FP32", [-1, 3, 640, 640])], [("output0", "FP32", [-1, 84, 8400])]),
}


def reference(model):
    return json.loads((models_dir / model / "1" / "reference.json").read_text())


def pattern(shape):
    """The deterministic input of scripts/export_models.py: element i is ((i * 7919) % 1000) / 1000."""
    idx = np.arange(int(np.prod(shape)), dtype=np.int64)
    return (((idx * 7919) % 1000) / 1000.0).astype(np.float32).reshape(shape)


def tensors(meta, mod):
    """(name, datatype, shape) of the metadata's inputs and outputs."""
    if mod is httpclient:
        row = lambda t: (t["name"], t["datatype"], [int(d) for d in t["shape"]])
        return [row(t) for t in meta["inputs"]], [row(t) for t in meta["outputs"]]
    row = lambda t: (t.name, t.datatype, [int(d) for d in t.shape])
    return [row(t) for t in meta.inputs], [row(t) for t in meta.outputs]


def infer(mod, client, model, arrays, binary, binary_output=None):
    """Runs `model` on `arrays` ({name: (datatype, array)}) and returns the outputs by name.

    Over HTTP, `binary` picks binary or JSON tensors; `binary_output`, when
    given, picks the outputs' encoding apart from the inputs'.
    """
    inputs = []
    for name, (datatype, x) in arrays.items():
        inp = mod.InferInput(name, list(x.shape), datatype)
        if mod is httpclient:
            inp.set_data_from_numpy(x, binary_data=binary)
        else:
            inp.set_data_from_numpy(x)
        inputs.append(inp)
    outputs = None
    if mod is httpclient:
        binary_output = binary if binary_output is None else binary_output
        outputs = [httpclient.InferRequestedOutput(o[0], binary_data=binary_output) for o in EXPECTED[model][1]]
    result = client.infer(model, inputs, outputs=outputs)
    return {o[0]: result.as_numpy(o[0]) for o in EXPECTED[model][1]}


def check_resnet50(mod, client, binary):
    ref = reference("resnet50")
    x = pattern(ref["pattern_input_shape"])
    out = infer(mod, client, "resnet50", {"input": ("FP32", x)}, binary)["logits"]
    want = np.array(ref["pattern_logits"], dtype=np.float32)
    assert out.dtype == np.float32 and out.shape == (2, 1000), (out.dtype, out.shape)
    err = float(np.abs(out - want).max())
    assert err <= 1e-3 * float(np.abs(want).max()) + 1e-3, f"logits differ from the reference by {err}"
    assert np.array_equal(out.argmax(1), want.argmax(1)), (out.argmax(1), want.argmax(1))
    return f"logits {list(out.shape)}, top-1 {out.argmax(1).tolist()}, max |diff| {err:.2e}"


def check_minilm(mod, client, binary):
    ref = reference("minilm")
    width = max(len(ids) for ids in ref["input_ids"])
    ids = np.zeros((len(ref["input_ids"]), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(ref["input_ids"]):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    out = infer(mod, client, "minilm", {"input_ids": ("INT64", ids), "attention_mask": ("INT64", mask)}, binary)[
        "embedding"
    ]
    want = np.array(ref["embeddings"], dtype=np.float64)
    assert out.dtype == np.float32 and out.shape == (len(want), 384), (out.dtype, out.shape)
    got = out.astype(np.float64)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-3), f"embeddings are not unit vectors: {norms}"
    cosine = (got * want).sum(1) / (norms * np.linalg.norm(want, axis=1))
    assert cosine.min() >= 0.999, f"cosine to the reference {cosine}"
    return f"embeddings {list(out.shape)}, unit norm, min cosine to reference {cosine.min():.6f}"


def check_yolov8n(mod, client, binary):
    ref = reference("yolov8n")
    x = pattern(ref["pattern_input_shape"])
    # A JSON head would be 705,600 more numbers: the JSON request asks for a
    # binary answer (Triton's binary_data_output), which also checks the mix.
    out = infer(mod, client, "yolov8n", {"images": ("FP32", x)}, binary, binary_output=True)["output0"]
    want = ref["pattern_output"]
    assert out.dtype == np.float32 and list(out.shape) == want["shape"], (out.dtype, out.shape)
    flat = out.astype(np.float64).reshape(-1)
    assert np.isfinite(flat).all(), "non-finite values in the detection head"
    assert abs(flat.sum() - want["sum"]) <= 1e-4 * abs(want["sum"]), (flat.sum(), want["sum"])
    strided = flat[::997][: len(want["strided_997"])]
    assert np.allclose(strided, want["strided_997"], rtol=1e-3, atol=1e-2), "head values differ from the reference"
    # Rows 0-3 are box centre/size in input pixels, rows 4-83 class scores in [0, 1].
    boxes, scores = out[0, :4], out[0, 4:]
    assert scores.min() >= 0.0 and scores.max() <= 1.0, (scores.min(), scores.max())
    assert boxes[2:].min() >= 0.0, "negative box sizes"
    return f"head {list(out.shape)}, sum {flat.sum():.1f} (reference {want['sum']:.1f}), best score {scores.max():.3f}"


CHECKS = {"resnet50": check_resnet50, "minilm": check_minilm, "yolov8n": check_yolov8n}

for mod, url in ((httpclient, http_url), (grpcclient, grpc_url)):
    client = mod.InferenceServerClient(url=url, network_timeout=120.0) if mod is httpclient else mod.InferenceServerClient(url=url)
    print(mod.__name__)
    assert client.is_server_live() and client.is_server_ready(), "server not live/ready"
    for model, check in CHECKS.items():
        assert client.is_model_ready(model), f"{model} not ready"
        inputs, outputs = tensors(client.get_model_metadata(model), mod)
        assert (inputs, outputs) == (
            [(n, d, s) for n, d, s in EXPECTED[model][0]],
            [(n, d, s) for n, d, s in EXPECTED[model][1]],
        ), f"{model} metadata: {inputs} -> {outputs}"
        for binary in (True, False) if mod is httpclient else (None,):
            start = time.monotonic()
            said = check(mod, client, binary)
            print(f"  {model} binary={binary}: {said} ({time.monotonic() - start:.2f} s)")
    # A shape the model does not take is refused by name, not run.
    small = mod.InferInput("input", [1, 3, 100, 100], "FP32")
    small.set_data_from_numpy(np.zeros((1, 3, 100, 100), dtype=np.float32))
    try:
        client.infer("resnet50", [small])
    except InferenceServerException as e:
        assert "input" in str(e), e
        print(f"  resnet50 [1,3,100,100]: refused ({str(e)[:80]})")
    else:
        raise AssertionError("resnet50 accepted a [1,3,100,100] image")
    client.close()
print("tritonclient models: all checks passed")
