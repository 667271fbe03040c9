# Sourced by the scripts that load the multi-model server with the demo's
# request bodies (demo.sh, profile.sh, ab.sh).

# demo_bodies DIR: writes DIR/images/{0..3}.jpg (generated photos-to-be, as
# no image data set ships with the repo) and DIR/texts.txt (a few sentences,
# one per line: the load generator's and raw-bench's --text-lines).
demo_bodies() {
    local dir=$1 python=.venv/bin/python3
    [[ -x "$python" ]] || python=python3
    mkdir -p "$dir/images"
    "$python" - "$dir/images" <<'EOF'
import sys
from PIL import Image, ImageDraw
out = sys.argv[1]
for i, (w, h) in enumerate([(640, 480), (480, 640), (800, 600), (512, 512)]):
    img = Image.new("RGB", (w, h), (40 + 50 * i, 120, 200 - 40 * i))
    d = ImageDraw.Draw(img)
    for k in range(12):
        d.ellipse([k * w // 14, k * h // 16, k * w // 14 + w // 5, k * h // 16 + h // 6],
                  fill=((k * 40) % 255, (k * 90 + i * 30) % 255, (k * 20) % 255))
    img.save(f"{out}/{i}.jpg", quality=90)
EOF
    cat >"$dir/texts.txt" <<'EOF'
convoy batches requests so the accelerator sees fewer, larger forward passes.
A quick brown fox jumps over the lazy dog near the river bank.
Sentence embeddings map similar meanings to nearby vectors.
The load generator measures latency from the intended send time.
Batching trades a little latency for a lot of throughput under load.
How many requests per second can one small machine serve?
EOF
}

# model_route MODEL: the v1 route of a demo model (classify, embed, detect;
# infer for any other).
model_route() {
    case "$1" in
    resnet50) echo classify ;;
    minilm) echo embed ;;
    yolov8n) echo detect ;;
    *) echo infer ;;
    esac
}

# model_bodies MODEL DIR: the load generator's body arguments for MODEL,
# from the bodies demo_bodies wrote in DIR (MiniLM: its texts, wrapped as
# {"$DEMO_TEXT_KEY": [...]} when that is set; the others: the images).
model_bodies() {
    if [[ "$1" == minilm ]]; then
        echo "--text-lines $2/texts.txt${DEMO_TEXT_KEY:+ --text-key $DEMO_TEXT_KEY}"
    else
        echo "--body-dir $2/images"
    fi
}

# raw_inputs MODEL DIR: raw-bench's input arguments for MODEL, the same
# inputs model_bodies gives the load generator (MiniLM: its texts, padded
# per batch as the server pads them; the image models take tensors of the
# shape their pre-processing makes, whatever the photo).
raw_inputs() {
    if [[ "$1" == minilm ]]; then
        echo "--text-lines $2/texts.txt"
    fi
}
