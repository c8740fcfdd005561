"""Unlabeled images from a Hugging Face dataset against the same images in tar shards:
labeling's peak memory (the labeling process and its decoding workers together), its
images/s, and the bare decoding rate of each source's stream.

    python benchmarks/hf_pile.py [--images 1000000] [--workers 2]

The images are ``tar_shards.py``'s (Fashion-MNIST's training images repeated, each copy
shifted and mirrored, PNG-encoded, shards of 10,000), and the Parquet pile holds the very same
PNG bytes, one file per tar shard, written by ``datasets`` (an ``Image`` column). The teacher
and the measurement are ``tar_shards.py``'s: ``pseudo-label`` in its own process, peak RSS
(VmHWM) of it and of its workers read until summary.json is written.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, write_section  # noqa: E402
from tar_shards import label, shards  # noqa: E402


def _parquet_of(job: tuple[str, str]) -> None:
    import datasets

    tar_path, out = job
    with tarfile.open(tar_path) as tar:
        images = [{"bytes": tar.extractfile(m).read(), "path": None} for m in tar.getmembers()]
    table = datasets.Dataset.from_dict(
        {"image": images}, features=datasets.Features({"image": datasets.Image()}))
    tmp = Path(out).with_suffix(".tmp")
    table.to_parquet(str(tmp))
    tmp.replace(out)


def parquet_pile(pattern: str) -> Path:
    """The tar shards' images, byte for byte, as one Parquet file per shard."""
    from braceexpand import braceexpand

    tars = list(braceexpand(pattern))
    folder = WORK / f"parquet-{Path(tars[0]).parent.name}"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(tar, str(folder / f"train-{n:05d}-of-{len(tars):05d}.parquet"))
            for n, tar in enumerate(tars)]
    with Pool(2) as pool:
        pool.map(_parquet_of, [job for job in jobs if not Path(job[1]).is_file()])
    return folder


def first_files(folder: Path, count: int) -> Path:
    """A folder holding links to the first ``count`` Parquet files of ``folder``."""
    part = WORK / f"{folder.name}-first-{count}"
    part.mkdir(parents=True, exist_ok=True)
    for file in sorted(folder.glob("*.parquet"))[:count]:
        link = part / file.name
        if not link.exists():
            link.symlink_to(file.resolve())
    return part


def decoding_rate(unlabeled: str, workers: int, count: int) -> float:
    """Images/s of the labeling stream alone (decoded in workers, no model), over the first
    ``count`` images' shards."""
    from noisystudent.data.shards import labeling_batches, open_source

    source = open_source(unlabeled, 28, 1, False)
    shard_count = max(1, count // 10_000)
    start, seen = time.perf_counter(), 0
    for batch in labeling_batches(source, range(shard_count), 1024, workers):
        seen += len(batch["images"])
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--decode-images", type=int, default=200_000)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    pattern = shards(args.images)
    parquet = parquet_pile(pattern)
    rates = {"tar": decoding_rate(pattern, args.workers, args.decode_images),
             "parquet": decoding_rate(str(parquet), args.workers, args.decode_images)}
    tar = label(pattern, "hf-pile-tar", args.workers)
    hf = label(str(parquet), "hf-pile-parquet", args.workers)
    small_n = args.images // 5
    hf_small = label(str(first_files(parquet, small_n // 10_000)), "hf-pile-parquet-small",
                     args.workers)
    growth = (hf["peak_mb"] - hf_small["peak_mb"]) * 2**20 / (args.images - small_n)
    parquet_mb = sum(p.stat().st_size for p in parquet.glob("*.parquet")) / 2**20
    tar_mb = sum(p.stat().st_size for p in Path(pattern).parent.glob("*.tar")) / 2**20

    def row(name, r, disk):
        return (f"| {name} | {r['images']:,} | {r['images_per_s']:,.0f} | {r['seconds']:.0f} s "
                f"| {r['main_mb']:,.0f} MB | {r['workers_mb']:,.0f} MB | "
                f"**{r['peak_mb']:,.0f} MB** | {disk:,.0f} MB |")

    body = f"""`pseudo-label --unlabeled` over {args.images:,} images, once from PNG tar shards of
10,000 and once from a folder of Parquet files holding the same PNG bytes (one file per shard,
written by `datasets` with an `Image` column), read through `datasets` (streamed). The
teacher, batch, threshold and the memory reading are those of "Unlabeled images from tar
shards" (`mobilenetv3_small_050` @28 px, batch 1,024, threshold 0, `--workers
{args.workers}`; peak RSS of the labeling process and the sum of its workers', until
`summary.json` is written).

| source | images | images/s | wall | peak RSS, labeling | peak RSS, workers | together | on disk |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{row("tar shards", tar, tar_mb)}
{row("Parquet through `datasets`", hf_small, parquet_mb * small_n / args.images)}
{row("Parquet through `datasets`", hf, parquet_mb)}

- **Peak memory, Parquet against tar shards: {hf["peak_mb"] / tar["peak_mb"]:.2f}x**
  (labeling process and workers together); from {small_n:,} to {args.images:,} Parquet
  images it grows by **{growth:,.1f} B per extra image**.
- **Decoding alone** (the labeling stream with no model, {args.decode_images:,} images,
  {args.workers} workers): tar shards {rates["tar"]:,.0f} images/s, Parquet through
  `datasets` {rates["parquet"]:,.0f} images/s
  ({rates["parquet"] / rates["tar"]:.2f}x).
"""
    write_section("hf-pile", "Unlabeled images from a Hugging Face dataset", body,
                  "none (no training)")


if __name__ == "__main__":
    main()
