"""Pseudo-labeling: a clean teacher, soft/hard/top-k labels in fp16 parts, the official
selection rule (threshold, balancing) streamed over the parts, equal to the in-memory rule."""

from __future__ import annotations

import os
import shutil
import socket
import tarfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from noisystudent.core import distributed, runs
from noisystudent.core.config import PseudoLabelConfig
from noisystudent.data.fashion_mnist import load_fashion_mnist
from noisystudent.data.shards import spread
from noisystudent.data.splits import load_split
from noisystudent.labels import store
from noisystudent.labels.directory import (
    SUMMARY,
    pseudo_labels_complete,
    read_pseudo_labels,
    read_summary,
)
from noisystudent.labels.selection import Part, StreamedSelection, random_key, select_and_balance
from noisystudent.labels.store import (
    LabelWriter,
    SoftTargets,
    label_parts,
    reduce_logits,
    selected_part,
)
from noisystudent.stages.pseudo_label import pseudo_label


def test_balancing_subsamples_full_classes_and_duplicates_rare_ones():
    confidence = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.95, 0.85, 0.2, 0.99, 0.4, 0.45])
    predicted = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    selected = select_and_balance(confidence, predicted, 3, threshold=0.3, per_class=4, seed=0)
    by_class = {c: selected[predicted[selected] == c].tolist() for c in range(3)}
    assert sorted(by_class[0]) == [0, 1, 2, 3]          # the 4 most confident of 5
    assert sorted(by_class[1]) == [5, 5, 6, 6]          # 2 members (0.2 dropped): 2 copies each
    assert len(by_class[2]) == 4 and set(by_class[2]) == {8, 9, 10}  # 1 copy + 1 random extra
    # The extra copy goes to the member with the lowest random key of (seed, index).
    extra = min((8, 9, 10), key=lambda i: int(random_key(torch.tensor([i]), 0)))
    assert by_class[2].count(extra) == 2
    assert 7 not in selected.tolist()                   # below the threshold
    no_balance = select_and_balance(confidence, predicted, 3, threshold=0.3, per_class=None,
                                    seed=0)
    assert no_balance.tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]


def test_random_keys_are_uniform_and_seeded():
    keys = random_key(torch.arange(100_000), seed=0)
    assert keys.min() >= 0 and keys.max() < 2 ** 30
    counts = torch.bincount(keys >> 26, minlength=16).float()  # 16 equal ranges
    assert (counts / counts.mean() - 1).abs().max() < 0.05
    assert not torch.equal(keys, random_key(torch.arange(100_000), seed=1))
    assert torch.equal(keys[5:9], random_key(torch.arange(5, 9), seed=0))  # a function of index


def random_case(case: int) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Confidences with many exact ties (and a block of saturated 1.0s) over skewed classes."""
    gen = torch.Generator().manual_seed(case)
    n = int(torch.randint(1, 2500, (1,), generator=gen))
    classes = int(torch.randint(1, 12, (1,), generator=gen))
    confidence = torch.rand(n, generator=gen)
    if case % 3 == 0:
        confidence = (confidence * 8).round() / 8
    if case % 4 == 0:
        confidence[: n // 2] = 1.0
    predicted = torch.randint(0, classes, (n,), generator=gen)
    predicted = torch.where(torch.rand(n, generator=gen) < 0.5,
                            predicted % max(1, classes // 2), predicted)
    return confidence, predicted, classes, float(torch.rand(1, generator=gen)) * 0.6


def streamed(confidence, predicted, classes, threshold, *, balance, per_class, seed, block,
             share=(0, None), **collectives) -> torch.Tensor:
    """The selected indices (with repeats) of the streamed selection over blocks of ``block``
    images of this rank's ``share``."""
    start, stop = share[0], share[1] or len(confidence)

    def parts():
        for s in range(start, stop, block):
            e = min(s + block, stop)
            yield Part(s, confidence[s:e], predicted[s:e])

    selection = StreamedSelection(parts, classes, threshold=threshold, balance=balance,
                                  per_class=per_class, seed=seed, **collectives)
    selected = [torch.repeat_interleave(torch.arange(p.start, p.start + len(c)), c.long())
                for p, c in selection.chosen_copies()]
    return torch.cat(selected) if selected else torch.empty(0, dtype=torch.int64)


def reference(confidence, predicted, classes, threshold, *, balance, per_class, seed):
    above = int((confidence >= threshold).sum())
    per_class = (per_class or max(1, round(above / classes))) if balance else None
    return select_and_balance(confidence, predicted, classes, threshold=threshold,
                              per_class=per_class, seed=seed)


SETTINGS = [dict(balance=False, per_class=0), dict(balance=True, per_class=0),
            dict(balance=True, per_class=37), dict(balance=True, per_class=900)]


@pytest.mark.parametrize("case", range(24))
def test_streamed_selection_equals_the_in_memory_rule(case):
    confidence, predicted, classes, threshold = random_case(case)
    for settings in SETTINGS:
        expected = reference(confidence, predicted, classes, threshold, seed=case, **settings)
        got = streamed(confidence, predicted, classes, threshold, seed=case,
                       block=1 + 97 * case, **settings)
        assert torch.equal(got, expected), settings


def _two_ranks(rank: int, port: int, cases: list[int], results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for case in cases:
            confidence, predicted, classes, threshold = random_case(case)
            for i, settings in enumerate(SETTINGS):
                share = (0, len(confidence) // 3) if rank == 0 else (len(confidence) // 3, None)
                got = streamed(confidence, predicted, classes, threshold, seed=case, block=113,
                               share=share, all_reduce=distributed.all_reduce_sum,
                               exclusive_prefix=distributed.exclusive_prefix, **settings)
                results[(rank, case, i)] = got
    finally:
        dist.destroy_process_group()


def test_streamed_selection_over_two_processes_equals_the_in_memory_rule():
    """Two gloo ranks with uneven shares: histograms summed, ties shared out in index order."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cases = [0, 3, 4, 8, 13]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_two_ranks, args=(port, cases, results), nprocs=2)
        results = dict(results)
    for case in cases:
        confidence, predicted, classes, threshold = random_case(case)
        for i, settings in enumerate(SETTINGS):
            expected = reference(confidence, predicted, classes, threshold, seed=case,
                                 **settings)
            got = torch.cat([results[(0, case, i)], results[(1, case, i)]])
            assert torch.equal(got, expected), (case, settings)


def test_top_k_labels_are_renormalised_and_hard_labels_are_one_class():
    logits = torch.randn(50, 1000) * 3
    stored = reduce_logits(logits, temperature=2.0, soft=True, top_k=10)
    assert stored["probs"].dtype == torch.float16 and stored["classes"].dtype == torch.int16
    assert torch.equal(stored["predicted"].long(), logits.argmax(1))
    torch.testing.assert_close(stored["confidence"], logits.softmax(1).max(1).values)
    dense = SoftTargets(stored["probs"], stored["classes"], 1000).dense()
    full = (logits / 2).softmax(1)
    top = full.topk(10, dim=1)
    expected = torch.zeros_like(full).scatter_(1, top.indices, top.values / top.values.sum(1,
                                                                                     True))
    torch.testing.assert_close(dense, expected, atol=2e-3, rtol=0)
    torch.testing.assert_close(dense.sum(1), torch.ones(50))
    # One bytes per image figure: 4 (confidence) + 2 (class) + 10 x (2 + 2) (the top 10).
    assert sum(t[0].nbytes for t in stored.values()) == 46

    hard = reduce_logits(logits, temperature=1.0, soft=False, top_k=0)
    one_hot = SoftTargets(hard["probs"], hard["classes"], 1000).dense()
    assert torch.equal(one_hot, torch.nn.functional.one_hot(logits.argmax(1), 1000).float())


def test_pseudo_label_writes_parts_and_summary(tmp_path, tiny_teacher, monkeypatch):
    config = PseudoLabelConfig(max_images=300, threshold=0.0, balance=False)
    summary = pseudo_label(tiny_teacher, tmp_path / "soft", config, quiet=True)
    assert [p.name for p in sorted((tmp_path / "soft").glob("*.safetensors"))] == \
        ["labels-00000-00000.safetensors", "selected-00000-00000.safetensors"]
    part = runs.load_weights(tmp_path / "soft" / "labels-00000-00000.safetensors")
    # 10 classes: every class is stored, in fp16, in class order (no class indices stored).
    assert part["probs"].shape == (300, 10) and part["probs"].dtype == torch.float16
    assert "classes" not in part and summary["top_k"] == 10
    assert summary["selected"] == 300 and summary["unlabeled_images"] == 300
    assert summary["stored_bytes"] == sum(p.stat().st_size for p in
                                          (tmp_path / "soft").glob("*.safetensors"))
    # The accuracy against the hidden true labels of the 300 unlabeled images labeled,
    # spread evenly over the unlabeled split.
    split = load_split(tiny_teacher / runs.SPLITS)
    picked = split["unlabeled"][spread(len(split["unlabeled"]), 300)]
    truth = load_fashion_mnist("train").labels[torch.as_tensor(picked)]
    index, targets, _ = read_pseudo_labels(tmp_path / "soft")
    soft = targets.dense()
    assert torch.equal(index, torch.arange(300))
    assert summary["pseudo_label_accuracy"] == pytest.approx(
        (part["predicted"].long() == truth).float().mean().item(), abs=1e-6)
    assert sum(summary["count_per_class"].values()) == 300
    assert (tmp_path / "soft" / SUMMARY).is_file()

    # The teacher runs in eval mode (its dropout of 0.5 is off), and parts fill as they go:
    # labeling again in parts of 64 images (26 bytes each) gives the same labels, in 5 parts.
    monkeypatch.setattr(store, "PART_BYTES", 64 * 26)
    # A pass killed mid-write left a temporary part and a stale part: both are removed.
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / f".labels-00000-00003.safetensors.7{runs.TMP_SUFFIX}").write_text("")
    (tmp_path / "again" / "labels-00001-00009.safetensors").write_text("")
    again = pseudo_label(tiny_teacher, tmp_path / "again", config, quiet=True)
    assert len(label_parts(tmp_path / "again")) == 5
    assert not list((tmp_path / "again").glob(".*"))
    assert again["mean_confidence"] == pytest.approx(summary["mean_confidence"])
    index, targets, _ = read_pseudo_labels(tmp_path / "again")
    torch.testing.assert_close(targets.dense(), soft)
    # The soft labels are softmax(logits / T): at T = 2 they are softmax of half the T = 1
    # labels' log-probabilities (the logits up to a constant per image), recomputed here.
    warm = PseudoLabelConfig(max_images=300, threshold=0.0, balance=False, temperature=2.0)
    pseudo_label(tiny_teacher, tmp_path / "warm", warm, quiet=True)
    _, warm_probs, _ = read_pseudo_labels(tmp_path / "warm")
    torch.testing.assert_close(warm_probs.dense(), (soft.log() / 2).softmax(1), atol=2e-3,
                               rtol=0)
    assert summary["mean_confidence"] == pytest.approx(soft.max(1).values.mean().item(),
                                                       abs=1e-3)

    # top_k 3: each image keeps its three most probable classes, renormalised.
    top3 = PseudoLabelConfig(max_images=300, threshold=0.0, balance=False, top_k=3)
    pseudo_label(tiny_teacher, tmp_path / "top3", top3, quiet=True)
    _, top3_targets, top3_summary = read_pseudo_labels(tmp_path / "top3")
    dense = top3_targets.dense()
    assert top3_summary["top_k"] == 3 and ((dense > 0).sum(1) <= 3).all()
    # Compared by value: two classes whose fp16 probabilities tie may be stored either way.
    top, ranked = soft.topk(3, dim=1), dense.topk(3, dim=1)
    torch.testing.assert_close(ranked.values, top.values / top.values.sum(1, keepdim=True),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(soft.gather(1, ranked.indices), top.values, atol=1e-3, rtol=0)

    hard = PseudoLabelConfig(max_images=300, soft=False, threshold=0.0, per_class=50)
    pseudo_label(tiny_teacher, tmp_path / "hard", hard, quiet=True)
    index, targets, summary = read_pseudo_labels(tmp_path / "hard")
    probs = targets.dense()
    assert set(probs.unique().tolist()) <= {0.0, 1.0} and (probs.sum(1) == 1).all()
    assert len(index) == 50 * len([c for c in summary["count_per_class"].values() if c])
    # Recomputed from the soft pass's parts (threshold 0 keeps all 300): the hard labels are
    # the teacher's classes, a full class keeps its 50 most confident images once each, a
    # rarer one every image floor(50 / n) or ceil(50 / n) times.
    confidence, teacher_class = part["confidence"], part["predicted"].long()
    assert torch.equal(probs.argmax(1), teacher_class[index])
    for c in range(10):
        members = (teacher_class == c).nonzero().flatten()
        selected = index[teacher_class[index] == c]
        if len(members) >= 50:
            assert len(selected.unique()) == 50
            left_out = members[~torch.isin(members, selected)]
            assert len(left_out) == 0 or confidence[selected].min() >= confidence[left_out].max()
        elif len(members):
            copies = torch.bincount(selected, minlength=300)[members]
            assert copies.sum() == 50 and copies.min() >= 50 // len(members)
            assert copies.max() <= -(-50 // len(members))


def test_pseudo_labels_written_before_the_streamed_parts_still_load(tmp_path):
    """A run labeled by an earlier version: per-rank shards of selected indices and fp32 probs."""
    probs = torch.softmax(torch.randn(6, 3), 1)
    runs.save_weights(tmp_path / "pseudo-00001.safetensors",
                      {"index": torch.tensor([4, 5, 5]), "probs": probs[3:]})
    runs.save_weights(tmp_path / "pseudo-00000.safetensors",
                      {"index": torch.tensor([0, 2, 1]), "probs": probs[:3]})
    runs.write_json(tmp_path / SUMMARY, {"classes": ["a", "b", "c"]})
    index, targets, _ = read_pseudo_labels(tmp_path)
    assert index.tolist() == [0, 1, 2, 4, 5, 5]
    torch.testing.assert_close(targets.dense(), probs[[0, 2, 1, 3, 4, 5]])


def test_pseudo_labels_written_when_selected_was_kept_still_load(tmp_path):
    """A labeling from before the rename (files ``kept-*``, summary keys ``kept``,
    ``unique_kept``, ``kept_accuracy``, ``kept_shards``) reads as the same labeling today."""
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    writer = LabelWriter(new, 0, 0)
    writer.append(reduce_logits(torch.randn(5, 3), temperature=1.0, soft=True, top_k=2))
    writer.close()
    runs.save_weights(selected_part(label_parts(new)[0]), {"copies": torch.tensor([2, 0, 1, 1, 0])})
    with tarfile.open(new / "selected-00000-00000.tar", "w"):
        pass  # an empty tar stands in for a streamed shard's selected images
    shards = {"selected-00000-00000.tar": (new / "selected-00000-00000.tar").stat().st_size}
    runs.write_json(new / SUMMARY, {"classes": ["a", "b", "c"], "selected": 4,
                                    "unique_selected": 3, "selected_accuracy": None,
                                    "selected_shards": shards})
    # The same files and keys under the names the earlier version wrote.
    old.mkdir()
    for path in new.iterdir():
        shutil.copy(path, old / path.name.replace("selected-", "kept-"))
    summary = {key.replace("selected", "kept"): value
               for key, value in runs.read_json(new / SUMMARY).items()}
    summary["kept_shards"] = {name.replace("selected-", "kept-"): size
                              for name, size in shards.items()}
    runs.write_json(old / SUMMARY, summary)
    assert sorted(p.name for p in old.iterdir()) == [
        "kept-00000-00000.safetensors", "kept-00000-00000.tar",
        "labels-00000-00000.safetensors", SUMMARY]

    assert pseudo_labels_complete(new) and pseudo_labels_complete(old)
    assert read_summary(old) == {**read_summary(new), "selected_shards": summary["kept_shards"]}
    index, targets, read = read_pseudo_labels(old)
    expected_index, expected, _ = read_pseudo_labels(new)
    assert index.tolist() == expected_index.tolist() == [0, 0, 2, 3]
    assert torch.equal(targets.dense(), expected.dense()) and read == read_summary(old)


def test_flip_averaged_logits_are_the_mean_over_the_image_and_its_mirror():
    from noisystudent.models.inference import predict_logits

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    images = torch.randn(5, 2, 4, 4)
    batches = [{"images": images}]
    plain = predict_logits(model, lambda x: x, batches, device=torch.device("cpu"), dtype=None)
    flipped = predict_logits(model, lambda x: x, batches, device=torch.device("cpu"),
                             dtype=None, flip=True)
    torch.testing.assert_close(flipped, (plain + model(images.flip(3))).detach() / 2)
    assert not torch.allclose(flipped, plain)
    model.flip_tta = True  # a model that averages its mirror itself is not flipped again
    torch.testing.assert_close(predict_logits(model, lambda x: x, batches,
                                              device=torch.device("cpu"), dtype=None,
                                              flip=True), plain)


def test_onnx_runtime_labels_as_pytorch_does(tmp_path, tiny_teacher):
    """The labeling through ONNX Runtime (the teacher exported, checked, then every batch, its
    mirror averaged in) gives PyTorch fp32's labels, to fp16 storage's precision."""
    pytest.importorskip("onnxruntime")
    made = {}
    for runtime in ("torch", "onnxruntime"):
        config = PseudoLabelConfig(max_images=300, threshold=0.0, balance=False, flip=True,
                                   precision="fp32", runtime=runtime)
        summary = pseudo_label(tiny_teacher, tmp_path / runtime, config, quiet=True)
        assert summary["runtime"] == runtime
        made[runtime] = read_pseudo_labels(tmp_path / runtime)[1].dense()
    torch.testing.assert_close(made["onnxruntime"], made["torch"], atol=2e-3, rtol=0)
    assert not list(tmp_path.glob("**/*.onnx"))  # the exported teacher is private and gone
