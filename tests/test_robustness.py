"""Corruptions: 15 types x 5 severities, cached and reproducible; mCE against a baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noisystudent.core.errors import UserError
from noisystudent.reports import robustness
from noisystudent.reports.evaluate import CORRUPTIONS, evaluate_corruptions
from noisystudent.reports.robustness import corrupted_sets, corruption_names, mean_corruption_error

from .conftest import needs_fashion_mnist


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISYSTUDENT_CACHE", str(tmp_path / "cache"))


class _NoRegeneration:
    """Stands in for ProcessPoolExecutor: any attempt to generate a corrupted set fails."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("a corrupted set was regenerated instead of read from the cache")


@needs_fashion_mnist
def test_corrupted_sets_are_cached_reproducible_and_grayscale_stays_gray(tmp_path, monkeypatch):
    from noisystudent.data.fashion_mnist import load_fashion_mnist

    images = load_fashion_mnist("test").images[:6]  # uint8 (6, 1, 28, 28)
    names = corruption_names()
    assert len(names) == 15 and "glass_blur" in names and "speckle_noise" not in names
    chosen = names[:4] + ["glass_blur"]
    sets = corrupted_sets(images, chosen, workers=1)
    assert len(sets) == 25 and set(sets) == {(n, s) for n in chosen for s in range(1, 6)}
    for value in sets.values():
        assert value.shape == (6, 1, 32, 32)  # raised to the 32 px minimum, still grayscale
        assert value.dtype == torch.uint8
    # Different seeds per severity: severity 1 and 5 differ.
    assert not torch.equal(sets[("shot_noise", 1)], sets[("shot_noise", 5)])
    cached = sorted((tmp_path / "cache" / "corruptions").rglob("*.npy"))
    assert len(cached) == 25

    # The second call reads the files: one replaced by zeros comes back as zeros, and nothing
    # is generated (the process pool is never started).
    folder = cached[0].parent
    np.save(folder / "gaussian_noise-3.npy", np.zeros((6, 1, 32, 32), dtype=np.uint8))
    real_pool = robustness.ProcessPoolExecutor
    monkeypatch.setattr(robustness, "ProcessPoolExecutor", _NoRegeneration)
    again = corrupted_sets(images, chosen, workers=1)
    assert set(again) == set(sets)
    assert torch.equal(again[("gaussian_noise", 3)], torch.zeros(6, 1, 32, 32, dtype=torch.uint8))
    for key, value in sets.items():
        if key != ("gaussian_noise", 3):
            assert torch.equal(value, again[key]), key

    # A missing file is generated again (the stand-in pool proves it is attempted) ...
    (folder / "shot_noise-2.npy").unlink()
    with pytest.raises(AssertionError, match="regenerated"):
        corrupted_sets(images, chosen, workers=1)
    # ... and, seeded, comes out identical; the other files are left as they are.
    monkeypatch.setattr(robustness, "ProcessPoolExecutor", real_pool)
    third = corrupted_sets(images, chosen, workers=1)
    assert torch.equal(third[("shot_noise", 2)], sets[("shot_noise", 2)])
    assert torch.equal(torch.from_numpy(np.load(folder / "shot_noise-2.npy")),
                       sets[("shot_noise", 2)])
    assert not third[("gaussian_noise", 3)].any()


def test_mce_against_hand_computed_errors():
    baseline = {"images": 10, "errors": {
        "a": [0.2, 0.3, 0.4, 0.5, 0.6],  # sum 2.0
        "b": [0.4, 0.4, 0.4, 0.4, 0.4],  # sum 2.0
        "c": [0.1, 0.1, 0.2, 0.2, 0.4],  # sum 1.0
    }}
    model = {"images": 10, "errors": {
        "a": [0.1, 0.2, 0.3, 0.4, 0.5],  # sum 1.5 -> CE 100 * 1.5 / 2.0 = 75
        "b": [0.5, 0.5, 0.5, 0.5, 0.5],  # sum 2.5 -> CE 100 * 2.5 / 2.0 = 125
        "c": [0.0, 0.0, 0.1, 0.1, 0.3],  # sum 0.5 -> CE 100 * 0.5 / 1.0 = 50
    }}
    result = mean_corruption_error(model, baseline)
    assert result["ce"] == pytest.approx({"a": 75.0, "b": 125.0, "c": 50.0})
    # mCE = (75 + 125 + 50) / 3 = 83.33..., the unweighted mean over corruptions
    # (not the pooled 100 * 4.5 / 5.0 = 90).
    assert result["mce"] == pytest.approx(83.33333333333333)
    itself = mean_corruption_error(baseline, baseline)
    assert itself["ce"] == pytest.approx({"a": 100.0, "b": 100.0, "c": 100.0})
    assert itself["mce"] == pytest.approx(100.0)
    # The reverse ratio: CE 100 * 2.0 / 1.5, 100 * 2.0 / 2.5, 100 * 1.0 / 0.5.
    reverse = mean_corruption_error(baseline, model)
    assert reverse["ce"] == pytest.approx({"a": 133.33333333333333, "b": 80.0, "c": 200.0})
    assert reverse["mce"] == pytest.approx((133.33333333333333 + 80.0 + 200.0) / 3)

    with pytest.raises(UserError):
        mean_corruption_error({**model, "images": 20}, baseline)


@pytest.mark.slow
def test_evaluate_corruptions_on_a_run(tiny_teacher, tmp_path, monkeypatch):
    from noisystudent.core.device import autocast, resolve_precision
    from noisystudent.data.fashion_mnist import load_fashion_mnist
    from noisystudent.models.saved import load_trained
    from noisystudent.models.transforms import to_model_input
    from noisystudent.reports import evaluate as evaluate_module
    from noisystudent.stages.train import train

    from .conftest import quick_config

    cpu = torch.device("cpu")
    baseline = tmp_path / "baseline"
    train(quick_config(labels_per_class=3, seed=1), baseline, quiet=True)
    trained, test = load_trained(tiny_teacher, cpu), load_fashion_mnist("test")
    # The caller's model and test set are used as they are: nothing is loaded again.
    monkeypatch.setattr(evaluate_module, "load_trained", None)
    measured = evaluate_corruptions(tiny_teacher, cpu, images=20, trained=trained,
                                    test_set=test)
    monkeypatch.undo()
    assert (tiny_teacher / CORRUPTIONS).is_file() and measured["images"] == 20
    assert set(measured["errors"]) == set(corruption_names())

    # One corruption's error, by hand, on the cached corrupted images.
    images, labels = test.images[:20], test.labels[:20]
    fog = corrupted_sets(images, corruption_names())[("fog", 3)]
    dtype = resolve_precision(trained.config["precision"], cpu, training=False)
    with torch.no_grad(), autocast(cpu, dtype):  # the precision evaluation runs in
        logits = trained.model(to_model_input(fog, trained.spec)).float()
    assert measured["errors"]["fog"][2] == pytest.approx(
        (logits.argmax(1) != labels).float().mean().item(), abs=1e-6)

    # mCE against another run, from both runs' errors by hand.
    result = evaluate_corruptions(tiny_teacher, cpu, baseline=baseline, images=20)
    reference = evaluate_corruptions(baseline, cpu, images=20)["errors"]
    by_hand = [100 * sum(measured["errors"][n]) / sum(reference[n]) for n in reference]
    assert result["mce"] == pytest.approx(sum(by_hand) / len(by_hand))
    assert result["mce"] != pytest.approx(100.0)
