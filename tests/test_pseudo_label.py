"""Pseudo-labeling: a clean teacher, soft/hard labels, threshold, official-style balancing."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from noisystudent import runs
from noisystudent.config import PseudoLabelConfig
from noisystudent.data.fashion_mnist import load_fashion_mnist
from noisystudent.data.splits import load_split
from noisystudent.pseudo_label import SUMMARY, pseudo_label, read_pseudo_labels, select_and_balance


def test_balancing_subsamples_full_classes_and_duplicates_rare_ones():
    confidence = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.85, 0.2, 0.99, 0.4, 0.45])
    predicted = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    gen = torch.Generator().manual_seed(0)
    kept = select_and_balance(confidence, predicted, 3, threshold=0.3, per_class=4,
                              generator=gen)
    by_class = {c: kept[predicted[kept] == c].tolist() for c in range(3)}
    assert sorted(by_class[0]) == [0, 1, 2, 3]          # the 4 most confident of 5
    assert sorted(by_class[1]) == [5, 5, 6, 6]          # 2 members (0.2 dropped): 2 copies each
    assert len(by_class[2]) == 4 and set(by_class[2]) == {8, 9, 10}  # 1 copy + 1 random extra
    assert 7 not in kept.tolist()                       # below the threshold
    no_balance = select_and_balance(confidence, predicted, 3, threshold=0.3, per_class=None,
                                    generator=gen)
    assert no_balance.tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]


def test_pseudo_label_writes_shards_and_summary(tmp_path, tiny_teacher):
    config = PseudoLabelConfig(max_images=300, threshold=0.0, balance=False)
    summary = pseudo_label(tiny_teacher, tmp_path / "soft", config, quiet=True)
    shard = load_file(str(tmp_path / "soft" / "pseudo-00000.safetensors"))
    assert shard["index"].dtype == torch.int64 and shard["probs"].shape == (300, 10)
    assert summary["kept"] == 300 and summary["unlabeled_images"] == 300
    # The accuracy against the hidden true labels of the 300 first unlabeled images.
    split = load_split(tiny_teacher / runs.SPLITS)
    truth = load_fashion_mnist("train").labels[torch.as_tensor(split["unlabeled"][:300])]
    order = shard["index"].argsort()
    predicted = shard["probs"][order].argmax(1)
    assert summary["pseudo_label_accuracy"] == pytest.approx(
        (predicted == truth).float().mean().item(), abs=1e-6)
    assert sum(summary["count_per_class"].values()) == 300
    assert (tmp_path / "soft" / SUMMARY).is_file()

    # The teacher runs in eval mode (its dropout of 0.5 is off): labeling twice is identical.
    again = pseudo_label(tiny_teacher, tmp_path / "again", config, quiet=True)
    assert again["mean_confidence"] == summary["mean_confidence"]
    index, soft, _ = read_pseudo_labels(tmp_path / "again")
    torch.testing.assert_close(soft, shard["probs"][shard["index"].argsort()])
    # The soft labels are softmax(logits / T): at T = 2 they are softmax of half the T = 1
    # labels' log-probabilities (the logits up to a constant per image), recomputed here.
    warm = PseudoLabelConfig(max_images=300, threshold=0.0, balance=False, temperature=2.0)
    pseudo_label(tiny_teacher, tmp_path / "warm", warm, quiet=True)
    _, warm_probs, _ = read_pseudo_labels(tmp_path / "warm")
    torch.testing.assert_close(warm_probs, (soft.log() / 2).softmax(1))
    assert summary["mean_confidence"] == pytest.approx(soft.max(1).values.mean().item())

    hard = PseudoLabelConfig(max_images=300, soft=False, threshold=0.0, per_class=50)
    pseudo_label(tiny_teacher, tmp_path / "hard", hard, quiet=True)
    index, probs, summary = read_pseudo_labels(tmp_path / "hard")
    assert set(probs.unique().tolist()) <= {0.0, 1.0} and (probs.sum(1) == 1).all()
    assert len(index) == 50 * len([c for c in summary["count_per_class"].values() if c])
    # Recomputed from the soft pass's confidences (threshold 0 keeps all 300): the hard labels
    # are the teacher's classes, a full class keeps its 50 most confident images once each,
    # a rarer one every image floor(50 / n) or ceil(50 / n) times.
    confidence, teacher_class = soft.max(1)
    assert torch.equal(probs.argmax(1), teacher_class[index])
    for c in range(10):
        members = (teacher_class == c).nonzero().flatten()
        kept = index[teacher_class[index] == c]
        if len(members) >= 50:
            assert len(kept.unique()) == 50
            left_out = members[~torch.isin(members, kept)]
            assert len(left_out) == 0 or confidence[kept].min() >= confidence[left_out].max()
        elif len(members):
            copies = torch.bincount(kept, minlength=300)[members]
            assert copies.sum() == 50 and copies.min() >= 50 // len(members)
            assert copies.max() <= -(-50 // len(members))
