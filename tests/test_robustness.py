"""Corruptions: 15 types x 5 severities, cached and reproducible; mCE against a baseline."""

from __future__ import annotations

import pytest
import torch

from noisystudent.evaluate import CORRUPTIONS, evaluate_corruptions
from noisystudent.robustness import corrupted_sets, corruption_names, mean_corruption_error


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISYSTUDENT_CACHE", str(tmp_path / "cache"))


def test_corrupted_sets_are_cached_reproducible_and_grayscale_stays_gray(tmp_path):
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    names = corruption_names()
    assert len(names) == 15 and "glass_blur" in names and "speckle_noise" not in names
    sets = corrupted_sets(images, names[:4] + ["glass_blur"], workers=1)
    assert len(sets) == 25
    assert sets[("gaussian_noise", 5)].shape == (6, 1, 32, 32)  # raised to the 32 px minimum
    assert sets[("gaussian_noise", 5)].dtype == torch.uint8
    cached = list((tmp_path / "cache" / "corruptions").rglob("*.npy"))
    assert len(cached) == 25
    for path in cached:  # a second call reads the cache, bit for bit
        path.write_bytes(path.read_bytes())
    again = corrupted_sets(images, names[:4] + ["glass_blur"], workers=1)
    for key, value in sets.items():
        assert torch.equal(value, again[key]), key
    # Different seeds per severity: severity 1 and 5 differ.
    assert not torch.equal(sets[("shot_noise", 1)], sets[("shot_noise", 5)])


def test_mce_is_100_for_the_baseline_and_scales_with_errors():
    base = {"images": 10, "errors": {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.2] * 5}}
    better = {"images": 10, "errors": {"a": [0.05, 0.1, 0.15, 0.2, 0.25], "b": [0.2] * 5}}
    assert mean_corruption_error(base, base)["mce"] == pytest.approx(100.0)
    result = mean_corruption_error(better, base)
    assert result["ce"]["a"] == pytest.approx(50.0) and result["mce"] == pytest.approx(75.0)


def test_evaluate_corruptions_on_a_run(tiny_teacher, tmp_path):
    measured = evaluate_corruptions(tiny_teacher, torch.device("cpu"), baseline=tiny_teacher,
                                    images=20)
    assert measured["images"] == 20 and measured["mce"] == pytest.approx(100.0)
    assert set(measured["errors"]) == set(corruption_names())
    assert all(len(v) == 5 and all(0 <= e <= 1 for e in v) for v in measured["errors"].values())
    assert (tiny_teacher / CORRUPTIONS).is_file()
