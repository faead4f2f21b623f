"""Store the prediction scales of the shipped ``nuclei`` model in its metadata, weights untouched.

``postprocess["scales"]`` (:func:`napari_unet.core.predict.scales.stored_scales`) becomes
``bench_dsb.SHIPPED_SCALES``: colour images averaged over scales 1, 0.7 and 1.4, gray ones at
their own size (chosen on the 80 validation images: ``benchmarks/bench_scale.py --average``).
Only the safetensors header is written again; the tensor bytes after it are copied as they
are, so the weights stay byte for byte what training wrote (``--ship`` of
``benchmarks/bench_dsb.py`` stores the same scales in a newly trained file).

    python scripts/set_shipped_scales.py
"""

import json
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_dsb import SHIPPED_SCALES  # noqa: E402


def rewrite_metadata(path: Path, update) -> None:
    """Write ``path`` again with its ``__metadata__`` passed through ``update`` (a function of
    the decoded metadata dict), the tensor data copied byte for byte."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = {k: json.loads(v) for k, v in header["__metadata__"].items()}
    header["__metadata__"] = {k: json.dumps(v) for k, v in update(meta).items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors keeps the data 8-byte aligned
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def main() -> int:
    from napari_unet.models import REGISTRY

    path = REGISTRY["nuclei"].path
    rewrite_metadata(path, lambda meta: {
        **meta, "postprocess": {**meta["postprocess"], "scales": SHIPPED_SCALES}})
    print(f"{path}: postprocess scales {json.dumps(SHIPPED_SCALES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
