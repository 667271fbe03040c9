#!/usr/bin/env python3
"""Drift references for the exported models, and the demo's drift traffic.

A model's reference is what its production traffic is compared with
(convoy-drift, `[deployment.drift]`): per column, the values of the features
the server's monitor takes from each request (examples/multi-model/src/drift.rs),
computed here on an in-distribution set run through the exported model:

  resnet50  red_mean, green_mean, blue_mean, pixel_std (the normalised input),
            class (argmax of the logits), confidence (its softmax probability)
  minilm    tokens (attention mask), emb_0..emb_3 (the output's first values)

The in-distribution images and texts come from the same generators as the
demo's request bodies (scripts/demo.sh): synthetic "photos" (a coloured
background with ellipses; no image data set ships with the repository) and
templated sentences about serving models. The reference is written to
`models/<m>/<v>/drift_reference.json` and named in the manifest
(`"drift_reference"`); older manifests without it still load.

    python3 scripts/python/drift_reference.py reference models/resnet50/1
    python3 scripts/python/drift_reference.py images OUT --count 64 --seed 7 [--shift dark]
    python3 scripts/python/drift_reference.py texts OUT.txt --count 64 --seed 7 [--shift code]
"""

import argparse
import json
import random
import sys
from pathlib import Path

REFERENCE_FILE = "drift_reference.json"
ROWS = 300
SEED = 20261205


def synth_image(rng: random.Random, shift: str | None = None):
    """One synthetic photo; `dark` darkens it and adds noise (the shifted traffic)."""
    from PIL import Image, ImageDraw

    w, h = rng.choice([(640, 480), (480, 640), (800, 600), (512, 512)])
    i = rng.randrange(4)
    base = (40 + 50 * i + rng.randint(-20, 20), 120 + rng.randint(-20, 20), 200 - 40 * i + rng.randint(-20, 20))
    img = Image.new("RGB", (w, h), tuple(max(0, min(255, c)) for c in base))
    d = ImageDraw.Draw(img)
    for k in range(rng.randint(8, 14)):
        x, y = rng.randrange(w), rng.randrange(h)
        d.ellipse(
            [x, y, x + w // rng.randint(4, 7), y + h // rng.randint(4, 8)],
            fill=((k * 40 + rng.randint(0, 30)) % 255, (k * 90 + i * 30) % 255, (k * 20 + rng.randint(0, 30)) % 255),
        )
    if shift == "dark":
        import numpy as np

        a = np.asarray(img, dtype=np.float32) * 0.35
        a += np.random.default_rng(rng.randrange(1 << 30)).normal(0, 18, a.shape)
        img = Image.fromarray(np.clip(a, 0, 255).astype("uint8"))
    return img


SUBJECTS = ["convoy", "the batcher", "the router", "the autoscaler", "the server", "a replica", "the GPU pool", "the model"]
VERBS = ["batches", "routes", "serves", "queues", "scales", "answers", "measures", "balances"]
OBJECTS = ["requests", "sentence embeddings", "image classes", "larger forward passes", "latency under load", "traffic between versions", "tokens per second"]
ENDINGS = ["on one small machine.", "without dropping a request.", "while the load doubles.", "for every client.", "within its deadline.", "as the queue grows."]
CODE = [
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '1 day';",
    "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); }",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "import numpy as np; x = np.linspace(0, 1, 100); y = np.sin(x)",
    "docker run --rm -p 8080:8080 -v $(pwd):/data image:latest",
    "git rebase -i HEAD~3 && git push --force-with-lease origin main",
]


def synth_text(rng: random.Random, shift: str | None = None) -> str:
    if shift == "code":
        return " ".join(rng.sample(CODE, rng.randint(1, 3)))
    n = rng.randint(1, 2)
    return " ".join(
        f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}"
        for _ in range(n)
    )


def image_features(model, manifest: dict, images) -> dict:
    """The monitor's classify columns for each image, as the server computes them."""
    import torch
    from torchvision import transforms

    p = manifest["preprocess"]
    prep = transforms.Compose(
        [
            transforms.Resize(p["resize"]),
            transforms.CenterCrop(p["crop"]),
            transforms.ToTensor(),
            transforms.Normalize(p["mean"], p["std"]),
        ]
    )
    cols = {k: [] for k in ["red_mean", "green_mean", "blue_mean", "pixel_std", "class", "confidence"]}
    with torch.no_grad():
        for start in range(0, len(images), 16):
            x = torch.stack([prep(im) for im in images[start : start + 16]]).to(torch.float32)
            logits = model(x)
            probs = torch.softmax(logits.to(torch.float64), dim=1)
            for row, pr in zip(x.to(torch.float64), probs):
                cols["red_mean"].append(float(row[0].mean()))
                cols["green_mean"].append(float(row[1].mean()))
                cols["blue_mean"].append(float(row[2].mean()))
                cols["pixel_std"].append(float(row.std(unbiased=False)))
                cols["class"].append(str(int(pr.argmax())))
                cols["confidence"].append(float(pr.max()))
    return cols


def text_features(model, model_dir: Path, manifest: dict, texts) -> dict:
    """The monitor's embed columns for each text."""
    import torch
    from tokenizers import Tokenizer

    p = manifest["preprocess"]
    tok = Tokenizer.from_file(str(model_dir / p["tokenizer"]))
    tok.enable_truncation(p["max_tokens"])
    cols = {k: [] for k in ["tokens", "emb_0", "emb_1", "emb_2", "emb_3"]}
    with torch.no_grad():
        for t in texts:
            enc = tok.encode(t)
            ids = torch.tensor([enc.ids], dtype=torch.int64)
            mask = torch.tensor([enc.attention_mask], dtype=torch.int64)
            out = model(ids, mask)
            flat = out[0].flatten().to(torch.float64)
            cols["tokens"].append(float(mask.sum()))
            for i in range(4):
                cols[f"emb_{i}"].append(float(flat[i]))
    return cols


KINDS = {
    "red_mean": "numerical",
    "green_mean": "numerical",
    "blue_mean": "numerical",
    "pixel_std": "numerical",
    "class": "categorical",
    "confidence": "numerical",
    "tokens": "numerical",
}


def write_reference(model_dir: Path) -> bool:
    """Writes model_dir's reference and names it in the manifest; False for a kind without one."""
    import torch

    manifest_path = model_dir / "model.json"
    manifest = json.loads(manifest_path.read_text())
    rng = random.Random(SEED)
    model = torch.jit.load(str(model_dir / manifest["file"]), map_location="cpu").eval()
    if manifest["kind"] == "classify":
        cols = image_features(model, manifest, [synth_image(rng) for _ in range(ROWS)])
    elif manifest["kind"] == "embed":
        cols = text_features(model, model_dir, manifest, [synth_text(rng) for _ in range(ROWS)])
    else:
        return False
    reference = {
        "columns": [{"name": k, "kind": KINDS.get(k, "numerical"), "values": v} for k, v in cols.items()]
    }
    write_atomically(model_dir / REFERENCE_FILE, json.dumps(reference) + "\n")
    manifest["drift_reference"] = REFERENCE_FILE
    write_atomically(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return True


def write_atomically(path: Path, text: str) -> None:
    """A server or test reading `path` meanwhile sees the old or the new file, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference", help="write MODEL_DIR/drift_reference.json and name it in the manifest")
    r.add_argument("model_dirs", nargs="+", type=Path)
    i = sub.add_parser("images", help="write COUNT synthetic JPEGs to OUT")
    i.add_argument("out", type=Path)
    t = sub.add_parser("texts", help="write COUNT synthetic sentences to OUT, one a line")
    t.add_argument("out", type=Path)
    for p in (i, t):
        p.add_argument("--count", type=int, default=64)
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--shift", default=None)
    args = ap.parse_args()
    if args.cmd == "reference":
        for d in args.model_dirs:
            if write_reference(d):
                print(f"drift reference: {d / REFERENCE_FILE}")
    elif args.cmd == "images":
        args.out.mkdir(parents=True, exist_ok=True)
        rng = random.Random(args.seed)
        for n in range(args.count):
            synth_image(rng, args.shift).save(args.out / f"{n:03d}.jpg", quality=90)
    else:
        rng = random.Random(args.seed)
        args.out.write_text("".join(synth_text(rng, args.shift) + "\n" for _ in range(args.count)))


if __name__ == "__main__":
    sys.exit(main())
