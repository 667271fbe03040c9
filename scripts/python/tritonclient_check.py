"""Triton's own Python clients against convoy's KServe v2 endpoints, unchanged.

Usage: tritonclient_check.py HTTP_HOST:PORT GRPC_HOST:PORT

Checks, over HTTP (binary tensors, tritonclient's default, and JSON) and
gRPC: server live/ready, model ready and metadata, identity inference for
FP32/FP16/INT64/BYTES, concurrent async inference, and the errors for an
unknown model, a wrong datatype and a shape that does not match the data.
Exits non-zero on the first failed check.
"""
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

http_url, grpc_url = sys.argv[1], sys.argv[2]
MODEL = "identity"


def output_of(mod, result):
    response = result.get_response()
    name = response["outputs"][0]["name"] if mod is httpclient else response.outputs[0].name
    return result.as_numpy(name)


def expect_error(what, fn, needle):
    try:
        fn()
    except InferenceServerException as e:
        assert needle in str(e), f"{what}: unexpected error {e}"
        print(f"  {what}: refused ({str(e)[:80]})")
        return
    raise AssertionError(f"{what}: accepted")


for mod, url in ((httpclient, http_url), (grpcclient, grpc_url)):
    client = mod.InferenceServerClient(url=url, concurrency=8) if mod is httpclient else mod.InferenceServerClient(url=url)
    print(mod.__name__)
    assert client.is_server_live() and client.is_server_ready(), "server not live/ready"
    assert client.is_model_ready(MODEL), "identity not ready"
    meta = client.get_model_metadata(MODEL)
    name = meta["name"] if mod is httpclient else meta.name
    assert name == MODEL, meta
    for dtype, np_dtype in (("FP32", np.float32), ("FP16", np.float16), ("INT64", np.int64)):
        for binary in ((True, False) if mod is httpclient else (None,)):
            x = (np.arange(32) - 7).astype(np_dtype).reshape(2, 16)
            inp = mod.InferInput("INPUT0", list(x.shape), dtype)
            if binary is None:
                inp.set_data_from_numpy(x)
            else:
                inp.set_data_from_numpy(x, binary_data=binary)
            out = output_of(mod, client.infer(MODEL, [inp]))
            assert out.dtype == x.dtype and np.array_equal(out, x), (dtype, binary, out)
            print(f"  {dtype} binary={binary}: echoed")
    words = np.array([[b"convoy", b"batches"]], dtype=np.object_)
    inp = mod.InferInput("INPUT0", [1, 2], "BYTES")
    inp.set_data_from_numpy(words)
    out = output_of(mod, client.infer(MODEL, [inp]))
    assert [bytes(w) for w in out.reshape(-1)] == [b"convoy", b"batches"], out
    print("  BYTES: echoed")

    if mod is httpclient:
        x = np.ones((1, 16), dtype=np.float32)
        pending = []
        for i in range(32):
            inp = mod.InferInput("INPUT0", [1, 16], "FP32")
            inp.set_data_from_numpy(x * i)
            pending.append((i, client.async_infer(MODEL, [inp])))
        for i, p in pending:
            assert np.array_equal(output_of(mod, p.get_result()), x * i)
        print("  32 concurrent async requests: each its own answer")

    x = np.ones((1, 16), dtype=np.float32)
    inp = mod.InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(x)
    expect_error("unknown model", lambda: client.infer("nosuchmodel", [inp]), "nosuchmodel")
    bad = mod.InferInput("INPUT0", [1, 16], "FP32")
    bad.set_data_from_numpy(x)
    bad._datatype = "NOTATYPE"
    if mod is grpcclient:
        bad._input.datatype = "NOTATYPE"
    expect_error("wrong datatype", lambda: client.infer(MODEL, [bad]), "NOTATYPE")
    short = mod.InferInput("INPUT0", [1, 32], "FP32")
    short.set_data_from_numpy(np.ones((1, 32), dtype=np.float32))
    if mod is httpclient:
        short._raw_data = np.ones((1, 16), dtype=np.float32).tobytes()
        short._parameters["binary_data_size"] = len(short._raw_data)
    else:
        short._raw_content = np.ones((1, 16), dtype=np.float32).tobytes()
    expect_error("shape/data mismatch", lambda: client.infer(MODEL, [short]), "")
    client.close()
print("tritonclient: all checks passed")
