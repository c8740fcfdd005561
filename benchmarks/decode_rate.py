"""What decoding a photograph costs the loader workers: JPEG bytes to a 224 px (and a 32 px)
uint8 array with the toolkit's own decoder, per core, as the tar shards' workers do it.

    python benchmarks/decode_rate.py

The photographs are scikit-image's `chelsea` (451 x 300) and `coffee` (600 x 400), JPEG
quality 90, decoded by ``StreamedSource.decode`` (PIL: decode, exif transpose, resize the
shorter side, centre crop), one process on one core. It is the figure behind README's
"Scaling out" estimate of decoding 300 M images.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_section  # noqa: E402


def rate(source, sample, seconds: float = 3.0) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        source.decode(sample)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    import skimage.data
    from PIL import Image

    from noisystudent.data.shards import Sample, StreamedSource

    rows = []
    for name in ("chelsea", "coffee"):
        picture = getattr(skimage.data, name)()
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(picture)).save(buffer, format="jpeg", quality=90)
        sample = Sample(0, name, "jpg", buffer.getvalue())
        for size in (224, 32):
            source = StreamedSource(name, [], size, 3, False)
            rows.append((name, picture.shape, len(sample.data), size, rate(source, sample)))
    table = "\n".join(f"| {n} | {s[1]} x {s[0]} | {b / 1024:,.0f} KB | {size} px | {r:,.0f} |"
                      for n, s, b, size, r in rows)
    mean_224 = np.mean([r for *_, size, r in rows if size == 224])
    body = f"""One process, one core; `StreamedSource.decode` (PIL decode, resize, centre crop).

| photograph | pixels | JPEG | decoded to | images/s per core |
| --- | --- | ---: | ---: | ---: |
{table}

At 224 px a core decodes about **{mean_224:,.0f} images/s**: 300 M images are
{300e6 / mean_224 / 3600:,.0f} core-hours of decoding per labeling pass.
"""
    write_section("decode-rate", "Decoding a photograph in a loader worker", body,
                  "none (no training)")


if __name__ == "__main__":
    main()
