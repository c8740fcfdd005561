"""Unlabeled images from tar shards: labeling's peak memory (the labeling process and its
decoding workers together) at two sizes, its images/s against the same images from a .npy,
and the student's stream over the selected shards against in-memory batches.

    python benchmarks/tar_shards.py [--sizes 200000 1000000] [--workers 2]

The images are those of ``pseudo_label_streaming.py`` (Fashion-MNIST's training images
repeated, each copy shifted and mirrored), PNG-encoded in shards of 10,000, as a WebDataset
pile ships them; the teacher is the same fast ``mobilenetv3_small_050`` at 28 px. Threshold
0 selects every image, so the write pass rewrites every image into the selected shards: the most
it can cost. Memory is the kernel's peak RSS (VmHWM, exact whenever it is read) of the
labeling process and of each of its workers, read until the pass has written summary.json.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLI, ROOT, WORK, write_section  # noqa: E402
from pseudo_label_streaming import perturbed_npy, teacher  # noqa: E402

SHARD = 10_000


def _encode_shard(job: tuple[Path, Path, int, int]) -> None:
    from PIL import Image

    npy, out, start, stop = job
    rows = np.load(npy, mmap_mode="r")[start:stop]
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for i, image in enumerate(rows):
            buffer = io.BytesIO()
            Image.fromarray(image[0]).save(buffer, format="png")
            info = tarfile.TarInfo(f"{start + i:09d}.png")
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)
    tmp.replace(out)


def shards(count: int) -> str:
    """``count`` perturbed images as PNG tar shards; returns their brace pattern."""
    npy = perturbed_npy(count)
    folder = WORK / f"shards-{count}"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(npy, folder / f"{s:05d}.tar", start, min(start + SHARD, count))
            for s, start in enumerate(range(0, count, SHARD))]
    with Pool(2) as pool:
        pool.map(_encode_shard, [job for job in jobs if not job[1].is_file()])
    return str(folder / f"{{00000..{len(jobs) - 1:05d}}}.tar")


def descendants(root: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return tree - {root}


def high_water_kb(pid: int) -> int | None:
    """The kernel's peak RSS of a process so far (VmHWM): exact, whenever it is read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measured(argv: list[str], done: Path) -> dict:
    """Run argv; wall seconds, and the peak RSS (VmHWM) of the process and of its loader
    workers, read until ``done`` is written (the pass is over; VmHWM only grows, so a reading
    is that process's exact peak up to then)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    main, workers = [0], {}

    def sample():
        while process.poll() is None and not done.is_file():
            main[0] = high_water_kb(process.pid) or main[0]
            for pid in descendants(process.pid):
                workers[pid] = high_water_kb(pid) or workers.get(pid, 0)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = process.communicate()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"failed: {' '.join(argv)}\n{err[-3000:]}")
    return {"seconds": time.perf_counter() - started, "main_mb": main[0] / 1024,
            "workers_mb": sum(workers.values()) / 1024,
            "peak_mb": (main[0] + sum(workers.values())) / 1024}


def label(unlabeled: str, name: str, workers: int) -> dict:
    out = WORK / name
    shutil.rmtree(out, ignore_errors=True)
    result = measured(CLI + ["pseudo-label", "--teacher", str(teacher()), "--unlabeled",
                             unlabeled, "--out", str(out), "--threshold", "0",
                             "--batch-size", "1024", "--workers", str(workers), "--quiet"],
                      out / "summary.json")
    summary = json.loads((out / "summary.json").read_text())
    result.update(images=summary["unlabeled_images"], images_per_s=summary["images_per_s"],
                  selected=summary["selected"],
                  selected_bytes=sum(summary.get("selected_shards", {}).values()))
    return result


def student_stream(labels: Path, workers: int, steps: int = 300) -> dict:
    """Images/s of the student's pseudo-labeled side: the selected shards decoded in workers
    through the shuffle buffer, against the same count of rows from an in-memory tensor."""
    import torch

    from noisystudent.data.loaders import ImageBatches
    from noisystudent.labels.selected_shards import SelectedShardBatches, selected_shards
    from noisystudent.labels.store import SoftTargets

    batch, cpu = 768, torch.device("cpu")
    stream = SelectedShardBatches(selected_shards(labels), batch, cpu, num_classes=10,
                                  size=28, channels=1, temperature=1.0, seed=0, steps=steps,
                                  workers=workers, buffer=10_000)
    start = time.perf_counter()
    for _ in stream:
        pass
    streamed = steps * batch / (time.perf_counter() - start)
    images = torch.zeros(200_000, 1, 28, 28, dtype=torch.uint8)
    targets = SoftTargets(torch.full((200_000, 10), 0.1, dtype=torch.float16), None, 10)
    memory = ImageBatches.training(images, targets, batch, cpu, seed=0, steps=steps)
    start = time.perf_counter()
    for _ in memory:
        pass
    return {"streamed": streamed, "memory": steps * batch / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[200_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    small_n, large_n = args.sizes
    small, large = shards(small_n), shards(large_n)
    npy = label(str(perturbed_npy(large_n)), "shards-npy", args.workers)
    shutil.rmtree(WORK / "shards-npy")
    tar_small = label(small, "shards-small", args.workers)
    shutil.rmtree(WORK / "shards-small")
    tar_large = label(large, "shards-large", args.workers)
    stream = student_stream(WORK / "shards-large", args.workers)
    disk = sum(p.stat().st_size for p in (WORK / f"shards-{large_n}").glob("*.tar"))
    shutil.rmtree(WORK / "shards-large")

    def row(name, r):
        return (f"| {name} | {r['images']:,} | {r['images_per_s']:,.0f} | {r['seconds']:.0f} s "
                f"| {r['main_mb']:,.0f} MB | {r['workers_mb']:,.0f} MB | "
                f"{r['selected_bytes'] / 2**20:,.0f} MB |")

    growth = (tar_large["peak_mb"] - tar_small["peak_mb"]) * 2**20 / (large_n - small_n)
    body = f"""Teacher `mobilenetv3_small_050` @28 px (as in `pseudo-label-streaming`). The images:
Fashion-MNIST's training images repeated, each copy shifted and mirrored, as PNG in tar shards
of {SHARD:,} ({disk / large_n:,.0f} B per image on disk, tar headers included) and, for the
comparison, the same {large_n:,} images as a uint8 .npy. `--workers {args.workers}` decoding
processes, batch 1,024, threshold 0 (every image selected: the write pass rewrites all of them).
Memory: the kernel's peak RSS (VmHWM) of the labeling process, and the sum of its workers'
(each holds its own copy of the torch runtime's pages it touched), read until `summary.json`
is written: labeling, selection and the write pass. images/s is the labeling pass; wall time
adds start-up, selection and the selected shards' writing.

| source | images | images/s | wall | peak RSS, labeling | peak RSS, workers | selected shards |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{row(".npy (no decoding)", npy)}
{row("tar shards (PNG decoded in workers)", tar_small)}
{row("tar shards (PNG decoded in workers)", tar_large)}

- Memory growth from {small_n:,} to {large_n:,} images through tar shards, the labeling
  process and its workers together: **{growth:,.1f} B per extra image**.
- Decoding costs {npy["images_per_s"] / tar_large["images_per_s"]:,.1f}x the .npy's
  throughput here: the teacher is tiny (the .npy path is bound by the model, the shards by
  PNG decoding and tar parsing in {args.workers} workers on 2 cores).
- The student's pseudo-labeled side, batches of 768 over the selected shards (decoded in
  {args.workers} workers, shuffle buffer 10,000): **{stream["streamed"]:,.0f} images/s**,
  against {stream["memory"]:,.0f} images/s sliced from an in-memory tensor. The student
  steps at about 1,100 images/s on this CPU (benchmarks/HISTORY.md, `ablations-cpu`), so the
  stream keeps up with it.
"""
    write_section("tar-shards", "Unlabeled images from tar shards", body, "none (no training)")


if __name__ == "__main__":
    main()
