"""Unit tests of the stable building blocks: lr schedule, metrics, batch augmentations and the
batch sources of the training loop. Every expected number is computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from noisystudent.core import distributed
from noisystudent.core.errors import UserError
from noisystudent.data.arrays import NpyImages
from noisystudent.data.loaders import ConcatenatedBatches, ImageBatches, LabeledAndPseudoBatches
from noisystudent.noise import BatchedNoise
from noisystudent.noise.crop import crop_flip
from noisystudent.noise.randaugment import BatchedRandAugment
from noisystudent.reports.metrics import classification_metrics, expected_calibration_error
from noisystudent.training.optim import cosine_with_warmup

from .conftest import needs_fashion_mnist

CPU = torch.device("cpu")


# --------------------------------------------------------------------------- lr schedule


def _sgd_two_groups(lr_a: float, lr_b: float) -> torch.optim.Optimizer:
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": lr_b}], lr=lr_a)


def _lrs_per_step(optimizer, scheduler, steps: int) -> list[list[float]]:
    """The lr of every group at steps 0..steps (the lr the step-th batch trains with)."""
    seen = [[g["lr"] for g in optimizer.param_groups]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        seen.append([g["lr"] for g in optimizer.param_groups])
    return seen


def test_cosine_with_warmup_matches_the_formula_and_keeps_group_scales():
    # total 11, warmup 3: steps 0..2 warm up linearly, steps 3..11 follow a cosine over 8 steps.
    optimizer = _sgd_two_groups(0.1, 0.01)
    scheduler = cosine_with_warmup(optimizer, total_steps=11, warmup_steps=3)
    seen = _lrs_per_step(optimizer, scheduler, 13)
    expected_factor = {
        0: 1 / 3,  # (0 + 1) / 3
        1: 2 / 3,  # (1 + 1) / 3
        2: 1.0,  # (2 + 1) / 3: the warmup ends at the full lr
        3: 1.0,  # progress 0: 0.5 * (1 + cos 0)
        5: 0.8535533905932737,  # progress 2/8: 0.5 * (1 + cos(pi/4)) = 0.5 + sqrt(2)/4
        7: 0.5,  # progress 4/8: 0.5 * (1 + cos(pi/2))
        9: 0.1464466094067262,  # progress 6/8: 0.5 * (1 + cos(3pi/4)) = 0.5 - sqrt(2)/4
        11: 0.0,  # progress 1: the end of the schedule
        12: 0.0,  # past the end the lr stays at zero (progress is clamped to 1)
        13: 0.0,
    }
    for step, factor in expected_factor.items():
        lr_a, lr_b = seen[step]
        assert lr_a == pytest.approx(0.1 * factor, abs=1e-12), step
        assert lr_b == pytest.approx(0.01 * factor, abs=1e-12), step  # the group's own lr
    # Every step against the closed form, and the group ratio is constant before the end.
    for step in range(14):
        if step < 3:
            factor = (step + 1) / 3
        else:
            factor = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - 3) / 8)))
        assert seen[step][0] == pytest.approx(0.1 * factor, abs=1e-12), step
        if step < 11:
            assert seen[step][0] / seen[step][1] == pytest.approx(10.0), step
    # Monotone: up during warmup, down afterwards.
    lrs = [s[0] for s in seen]
    assert lrs[0] < lrs[1] < lrs[2]
    assert all(later < earlier for earlier, later in zip(lrs[3:11], lrs[4:12]))


def test_cosine_without_warmup_starts_at_the_full_lr():
    optimizer = _sgd_two_groups(0.2, 0.05)
    scheduler = cosine_with_warmup(optimizer, total_steps=4, warmup_steps=0)
    seen = _lrs_per_step(optimizer, scheduler, 4)
    # progress k/4: factors 1, 0.5(1+cos(pi/4)), 0.5, 0.5(1-cos(pi/4)), 0
    factors = [1.0, 0.8535533905932737, 0.5, 0.1464466094067262, 0.0]
    for (lr_a, lr_b), factor in zip(seen, factors):
        assert lr_a == pytest.approx(0.2 * factor, abs=1e-12)
        assert lr_b == pytest.approx(0.05 * factor, abs=1e-12)


# --------------------------------------------------------------------------- metrics


# Three classes, four samples; confidence = max prob, prediction = argmax.
#   s0 [0.9, 0.05, 0.05] label 0: confidence 0.9, correct
#   s1 [0.8, 0.2,  0.0 ] label 1: confidence 0.8, wrong
#   s2 [0.6, 0.4,  0.0 ] label 0: confidence 0.6, correct
#   s3 [0.4, 0.3,  0.3 ] label 1: confidence 0.4, wrong
ECE_PROBS = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.2, 0.0], [0.6, 0.4, 0.0], [0.4, 0.3, 0.3]])
ECE_LABELS = torch.tensor([0, 1, 0, 1])


def test_expected_calibration_error_by_hand():
    # 2 bins (0, .5], (.5, 1]:
    #   (0, .5]: s3 -> |0 - 0.4| * 1/4 = 0.1
    #   (.5, 1]: s0 s1 s2 -> accuracy 2/3, confidence 2.3/3 -> |2/3 - 2.3/3| * 3/4 = 0.075
    assert expected_calibration_error(ECE_PROBS, ECE_LABELS, bins=2) == pytest.approx(
        0.175, abs=1e-6)
    # 4 bins (0, .25], (.25, .5], (.5, .75], (.75, 1]:
    #   (.25, .5]: s3 -> 0.4 * 1/4 = 0.1
    #   (.5, .75]: s2 -> |1 - 0.6| * 1/4 = 0.1
    #   (.75, 1]: s0 s1 -> |1/2 - 0.85| * 2/4 = 0.175
    assert expected_calibration_error(ECE_PROBS, ECE_LABELS, bins=4) == pytest.approx(
        0.375, abs=1e-6)
    # 1 bin: |2/4 - (0.9+0.8+0.6+0.4)/4| = |0.5 - 0.675| = 0.175
    assert expected_calibration_error(ECE_PROBS, ECE_LABELS, bins=1) == pytest.approx(
        0.175, abs=1e-6)
    # Perfectly calibrated: confidence 1 and right every time.
    sure = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert expected_calibration_error(sure, torch.tensor([0, 1]), bins=15) == pytest.approx(0.0)


def test_classification_metrics_on_a_tiny_example():
    # labels    0 0 1 2 2
    # predicted 0 1 1 2 0   (the large logit), each with softmax confidence e^8 / (e^8 + 2)
    labels = torch.tensor([0, 0, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0])
    logits = torch.zeros(5, 3)
    logits[torch.arange(5), predicted] = 8.0
    result = classification_metrics(logits, labels, ["a", "b", "c"])
    assert result["top1"] == pytest.approx(3 / 5)
    assert result["per_class"] == pytest.approx({"a": 1 / 2, "b": 1.0, "c": 1 / 2})
    # rows are true classes, columns predicted classes
    assert result["confusion"] == [[1, 1, 0],
                                   [0, 1, 0],
                                   [1, 0, 1]]
    # one bin holds everything: |accuracy 0.6 - confidence e^8/(e^8+2)| = 0.39933...
    confidence = math.exp(8) / (math.exp(8) + 2)
    assert result["ece"] == pytest.approx(confidence - 0.6, abs=1e-5)


# --------------------------------------------------------------------------- augmentations


def _window_matches(out: torch.Tensor, images: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, 2pad+1, 2pad+1) bool: whether out[i] equals the (dy, dx) window of padded image i."""
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    size = 2 * pad + 1
    matches = torch.zeros(b, size, size, dtype=torch.bool)
    for dy in range(size):
        for dx in range(size):
            window = padded[:, :, dy:dy + h, dx:dx + w]
            matches[:, dy, dx] = (out == window).flatten(1).all(1)
    return matches


def _nonzero_images(n: int, side: int = 12, seed: int = 0) -> torch.Tensor:
    """Random images without zeros: a zero-padded window of one matches at one offset only."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 1, side, side), dtype=torch.uint8, generator=gen)


def _unflipped(out: torch.Tensor, images: torch.Tensor, pad: int) -> torch.Tensor:
    """``out`` with the flipped images mirrored back: a flipped crop is the mirror of a window
    of the padded image (on images without symmetries only one of the two fits)."""
    flipped = _window_matches(out.flip(-1), images, pad).flatten(1).any(1)
    return torch.where(flipped.view(-1, 1, 1, 1), out.flip(-1), out)


@needs_fashion_mnist
def test_random_crop_is_a_window_of_the_zero_padded_image(fashion_test):
    images = fashion_test[:64]
    torch.manual_seed(0)
    out = crop_flip(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    pad = 4  # round(28 / 8) = round(3.5) = 4
    windows = _unflipped(out, images, pad)
    matches = _window_matches(windows, images, pad)
    assert matches.flatten(1).any(1).all()  # every image is some window of its padded self
    # and not of its neighbour: the crop is taken from the image at the same index
    assert not _window_matches(windows, images.roll(1, 0), pad).flatten(1).any(1).all()
    # Same seed, same crops.
    torch.manual_seed(0)
    assert torch.equal(crop_flip(images), out)


def test_random_crop_offsets_differ_per_image_and_cover_the_padding():
    images = _nonzero_images(400, side=24)
    torch.manual_seed(1)
    out = crop_flip(images)  # pad round(24 / 8) = 3: 7 x 7 offsets
    windows = _unflipped(out, images, 3)
    matches = _window_matches(windows, images, 3)
    assert (matches.flatten(1).sum(1) == 1).all()  # no zeros inside: exactly one offset fits
    where = matches.flatten(1).float().argmax(1)
    dy, dx = where // 7, where % 7
    assert len(set(where.tolist())) >= 40  # of 49; one offset for the batch would give 1
    assert {0, 6} <= set(dy.tolist()) and {0, 6} <= set(dx.tolist())  # both extremes reached
    assert (dy == dx).float().mean() < 0.4  # drawn independently (1/7 expected)
    # The identity crop (offset pad, pad) is one of them, and the padding is zeros.
    assert bool((where == 3 * 7 + 3).any())
    corner = windows[(dy == 0) & (dx == 0)]
    assert len(corner) and (corner[:, :, :3, :] == 0).all() and (corner[:, :, :, :3] == 0).all()


def test_random_crop_flips_about_half_of_a_batch():
    images = _nonzero_images(2000, side=8)  # pad = round(8 / 8) = 1: 3 x 3 offsets
    torch.manual_seed(2)
    out = crop_flip(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    straight = _window_matches(out, images, 1).flatten(1).any(1)
    flipped = _window_matches(out.flip(-1), images, 1).flatten(1).any(1)
    assert (straight ^ flipped).all()  # each output is a crop, either flipped or not
    # Binomial(2000, 1/2): sd 22.4; 150 is more than 6 sd.
    assert abs(int(flipped.sum()) - 1000) < 150


@pytest.fixture(scope="module")
def fashion_test() -> torch.Tensor:
    from noisystudent.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist("test").images[:64]


@needs_fashion_mnist
def test_randaugment_noise_is_uint8_seeded_and_drawn_per_image(fashion_test, monkeypatch):
    augment = BatchedNoise(num_ops=2, magnitude=9)
    torch.manual_seed(0)
    out = augment(fashion_test)
    assert out.shape == fashion_test.shape and out.dtype == torch.uint8
    torch.manual_seed(0)
    assert torch.equal(augment(fashion_test), out)  # same seed, same batch
    torch.manual_seed(1)
    assert not torch.equal(augment(fashion_test), out)

    # 64 copies of one image through RandAugment alone (no crop or flip):
    # ops drawn per image give many distinct results, ops drawn per batch would give one.
    copies = fashion_test[:1].expand(64, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = BatchedRandAugment(num_ops=2, magnitude=9)(copies)
    distinct = {bytes(image.numpy().tobytes()) for image in out}
    assert len(distinct) >= 32
    changed = sum(not torch.equal(image, copies[0]) for image in out)
    assert changed >= 48  # the identity op (and no-op combinations) are a small minority


# --------------------------------------------------------------------------- batch sources


def _numbered(n: int, channels: int = 1, side: int = 4) -> torch.Tensor:
    """uint8 images whose every pixel is the row number: a batch says which rows it holds."""
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(
        n, channels, side, side).contiguous()


def _collect(batches) -> list[dict]:
    return list(iter(batches))


def _check_consistent(batch: dict) -> None:
    """Images, labels and index name the same rows."""
    rows = batch["images"][:, 0, 0, 0].long()
    assert torch.equal(rows, batch["index"])
    assert torch.equal(batch["labels"], batch["index"])


def test_image_batches_without_shuffle_are_in_order():
    batches = ImageBatches(_numbered(10), torch.arange(10), 4, CPU)
    got = _collect(batches)
    assert len(batches) == 3 and len(got) == 3  # ceil(10 / 4), the last one partial
    assert [b["index"].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for b in got:
        _check_consistent(b)
    assert batches.order() is None  # in order, one pass: no N-long index is made
    dropped = ImageBatches(_numbered(10), torch.arange(10), 4, CPU, drop_last=True)
    assert [b["index"].tolist() for b in dropped] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_image_batches_shuffle_is_a_permutation_per_epoch_and_deterministic():
    n = 24
    batches = ImageBatches.training(_numbered(n), torch.arange(n), 6, CPU, seed=3)
    assert len(batches) == 4
    orders = {}
    for epoch in range(3):
        batches.set_epoch(epoch)
        got = _collect(batches)
        for b in got:
            _check_consistent(b)
            assert len(b["index"]) == 6
        order = torch.cat([b["index"] for b in got])
        assert sorted(order.tolist()) == list(range(n))  # every row exactly once
        assert not torch.equal(order, torch.arange(n))  # actually shuffled
        orders[epoch] = order
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])

    # A resume: a fresh object at epoch 1 gives epoch 1's batches again.
    fresh = ImageBatches.training(_numbered(n), torch.arange(n), 6, CPU, seed=3)
    fresh.set_epoch(1)
    assert torch.equal(torch.cat([b["index"] for b in fresh]), orders[1])
    # Another seed, another order.
    other = ImageBatches.training(_numbered(n), torch.arange(n), 6, CPU, seed=4)
    other.set_epoch(1)
    assert not torch.equal(torch.cat([b["index"] for b in other]), orders[1])


def test_image_batches_with_more_steps_than_one_pass():
    n = 10
    batches = ImageBatches.training(_numbered(n), torch.arange(n), 4, CPU, seed=0, steps=7)
    got = _collect(batches)
    assert len(batches) == 7 and len(got) == 7
    assert all(len(b["index"]) == 4 for b in got)  # full batches throughout
    for b in got:
        _check_consistent(b)
    order = torch.cat([b["index"] for b in got])  # 28 rows: two full passes and 8 more
    for start in (0, 10):
        assert sorted(order[start:start + n].tolist()) == list(range(n))
    assert len(set(order[20:].tolist())) == 8  # the third pass is a permutation as well
    # Fewer steps than one pass: that many batches, no row twice.
    short = ImageBatches.training(_numbered(n), torch.arange(n), 4, CPU, seed=0, steps=2)
    rows = torch.cat([b["index"] for b in short]).tolist()
    assert len(rows) == 8 and len(set(rows)) == 8


def test_image_batches_partial_last_batch_and_steps_without_shuffle():
    # Shuffled without drop_last: every row once, the last batch partial (no repeated rows).
    batches = ImageBatches(_numbered(10), torch.arange(10), 4, CPU, shuffle=True)
    rows = [b["index"].tolist() for b in batches]
    assert [len(r) for r in rows] == [4, 4, 2] and sorted(sum(rows, [])) == list(range(10))
    # In order with more steps than one pass: the order wraps round, no empty batch.
    ordered = ImageBatches(_numbered(10), torch.arange(10), 4, CPU, steps=4)
    assert [b["index"].tolist() for b in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7],
                                                       [8, 9, 0, 1], [2, 3, 4, 5]]


def test_image_batches_tiny_labeled_set_still_yields_a_batch():
    batches = ImageBatches.training(_numbered(3), torch.arange(3), 8, CPU, seed=0)
    got = _collect(batches)
    assert len(got) == 1 and sorted(got[0]["index"].tolist()) == [0, 1, 2]


def test_image_batches_read_the_same_rows_from_a_npy_file(tmp_path):
    images = _numbered(30, channels=3)
    path = tmp_path / "images.npy"
    np.save(path, images.numpy())
    from_file = ImageBatches.training(NpyImages(path), torch.arange(30), 8, CPU, seed=5)
    in_memory = ImageBatches.training(images, torch.arange(30), 8, CPU, seed=5)
    for epoch in (0, 1):
        from_file.set_epoch(epoch)
        in_memory.set_epoch(epoch)
        for a, b in zip(from_file, in_memory, strict=True):
            assert torch.equal(a["images"], b["images"]) and torch.equal(a["index"], b["index"])
            _check_consistent(a)


def test_image_batches_shards_split_every_global_batch(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    n = 40

    def make() -> ImageBatches:
        b = ImageBatches.training(_numbered(n), torch.arange(n), 8, CPU, seed=7)
        b.set_epoch(2)
        return b

    whole = make()
    rank0, rank1 = make(), make()
    rank0.set_shard(0, 2)
    rank1.set_shard(1, 2)
    assert len(rank0) == len(rank1) == len(whole) == 5
    for full, a, b in zip(whole, rank0, rank1, strict=True):
        _check_consistent(a)
        _check_consistent(b)
        assert len(a["index"]) == len(b["index"]) == 4
        assert not set(a["index"].tolist()) & set(b["index"].tolist())
        assert torch.equal(torch.cat([a["index"], b["index"]]), full["index"])
        assert torch.equal(torch.cat([a["images"], b["images"]]), full["images"])
    # A global batch that does not split evenly is refused.
    odd = ImageBatches.training(_numbered(n), torch.arange(n), 7, CPU, seed=7)
    with pytest.raises(UserError):
        odd.set_shard(0, 2)


def test_labeled_and_pseudo_batches():
    labeled = ImageBatches.training(_numbered(20), torch.arange(20), 4, CPU, seed=0, steps=5)
    probs = torch.arange(100 * 10, dtype=torch.float32).view(100, 10)  # row i starts at 10 i
    pseudo = ImageBatches.training(_numbered(100), probs, 12, CPU, seed=1, steps=5)
    together = LabeledAndPseudoBatches(labeled, pseudo)
    assert len(together) == 5
    together.set_epoch(3)
    assert labeled.epoch == pseudo.epoch == 3
    got = _collect(together)
    assert len(got) == 5
    for step in got:
        assert set(step) == {"images", "labels", "pseudo_images", "pseudo_probs", "num_images"}
        assert step["images"].shape == (4, 1, 4, 4) and step["labels"].shape == (4,)
        assert step["pseudo_images"].shape == (12, 1, 4, 4)
        assert step["pseudo_probs"].shape == (12, 10)
        assert step["num_images"] == 16
        assert torch.equal(step["images"][:, 0, 0, 0].long(), step["labels"])
        # the soft-label rows belong to the pseudo images of the same step
        rows = step["pseudo_images"][:, 0, 0, 0].float()
        assert torch.equal(step["pseudo_probs"][:, 0], rows * 10)
    # Sources that disagree on the number of steps are refused.
    with pytest.raises(ValueError):
        LabeledAndPseudoBatches(
            labeled, ImageBatches.training(_numbered(100), probs, 12, CPU, seed=1, steps=4))


def test_concatenated_batches():
    labeled = ImageBatches.training(_numbered(20), torch.arange(20), 4, CPU, seed=0, steps=3)
    unlabeled = ImageBatches.training(_numbered(50), torch.full((50,), -1), 6, CPU, seed=1,
                                      steps=3)
    together = ConcatenatedBatches(labeled, unlabeled)
    assert len(together) == 3
    together.set_epoch(1)
    got = _collect(together)
    parts = list(zip(labeled, unlabeled))
    assert len(got) == len(parts) == 3
    for step, (a, b) in zip(got, parts):
        assert set(step) == {"images", "labels"}
        assert step["images"].shape == (10, 1, 4, 4)
        assert torch.equal(step["images"], torch.cat([a["images"], b["images"]]))
        assert torch.equal(step["labels"][:4], a["labels"])
        assert (step["labels"][4:] == -1).all()


def test_a_pace_fits_the_steps_to_the_seconds_and_a_replay_repeats_its_rates():
    from noisystudent.training.pace import LEAST_MEASURED, REFITS, SKIPPED_STEPS, Pace

    optimizer = _sgd_two_groups(0.1, 0.01)
    scheduler = cosine_with_warmup(optimizer, total_steps=100, warmup_steps=20)
    schedule = scheduler.lr_lambdas[0]
    pace = Pace(schedule, seconds=10.0)
    warm_up = [schedule(s) for s in range(20)]
    # The first steps are slow (allocation); then 20 steps a second.
    for step in range(1, 21):
        assert pace.step_done(step, 1.0 if step <= SKIPPED_STEPS else 0.05)
    # At step 20: 3.85 s spent, 6.15 s left at 20 steps/s: 123 more steps.
    assert schedule.total_steps == 20 + int((10 - 3 - 17 * 0.05) * 20) == 143
    assert [schedule(s) for s in range(20)] == warm_up  # the warm-up unchanged
    # A neighbour leaves at step 60: steps take 0.03 s. The refits along the decay follow the
    # pace since the fit before, and the run ends with its seconds, the learning rate never
    # jumping.
    rates, step = [], 20
    while True:
        step += 1
        rates.append(schedule(step - 1))
        if not pace.step_done(step, 0.05 if step < 60 else 0.03):
            break
    assert pace.trained == pytest.approx(10.0, abs=0.1) and step == schedule.total_steps > 143
    assert len(schedule.segments) == 1 + len(REFITS) and schedule(step) == 0.0
    assert max(abs(b - a) for a, b in zip(rates, rates[1:])) < 0.03
    # A replay given the steps and the pieces of the decay repeats every step's rate.
    again = cosine_with_warmup(_sgd_two_groups(0.1, 0.01), schedule.total_steps, 20,
                               schedule.segments).lr_lambdas[0]
    assert [again(s) for s in range(step + 1)] == [schedule(s) for s in range(step + 1)]
    # The fitted schedule lives in the scheduler's state, so a resumed stage keeps it.
    resumed = cosine_with_warmup(_sgd_two_groups(0.1, 0.01), total_steps=100, warmup_steps=20)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.lr_lambdas[0].total_steps == step and resumed.lr_lambdas[0].fitted
    # A short warm-up is measured over LEAST_MEASURED steps after the skipped ones.
    short = Pace(cosine_with_warmup(_sgd_two_groups(0.1, 0.01), 100, 2).lr_lambdas[0], 5.0)
    assert short.fit_at == SKIPPED_STEPS + LEAST_MEASURED
    # The seconds are the step's: what it spends outside training (2 s so far, and 0.1 s an
    # epoch of 50 steps still to come) is left out of its training.
    outside = Pace(cosine_with_warmup(_sgd_two_groups(0.1, 0.01), 100, 2).lr_lambdas[0], 10.0,
                   outside=lambda total, trained: 2.0 + 0.1 * -(-total // 50))
    step = 0
    while outside.step_done(step := step + 1, 0.05):
        pass
    assert outside.trained == pytest.approx(10.0 - 2.0 - 0.1 * -(-step // 50), abs=0.06)
    # No seconds: the total stays as set.
    fixed = Pace(cosine_with_warmup(_sgd_two_groups(0.1, 0.01), 30, 2).lr_lambdas[0])
    assert all(fixed.step_done(s, 9.0) for s in range(1, 30)) and not fixed.step_done(30, 9.0)
