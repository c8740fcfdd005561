"""report.html (``noisystudent review``): one self-contained page per run, its pictures from
the stored images, its lists bounded, and every image loading in a real browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from noisystudent.core import runs
from noisystudent.core.config import PseudoLabelConfig
from noisystudent.core.errors import UserError
from noisystudent.labels.directory import selection_parts
from noisystudent.labels.selection import Part
from noisystudent.reports.html import MAX_CLASSES, MAX_SHOWN, confusion_html
from noisystudent.reports.review import REPORT_HTML, EarlierLabels, LabelingView, review
from noisystudent.stages.pseudo_label import pseudo_label
from noisystudent.stages.train import train

from .conftest import needs_fashion_mnist, quick_config
from .test_shards import write_shards

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Images(HTMLParser):
    """Every <img> of a page, and the page's text."""

    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])
        assert tag not in ("script", "link", "iframe"), f"<{tag}> in a self-contained page"

    def handle_data(self, data):
        self.text.append(data)


def parse_page(path: Path) -> Images:
    page = Images()
    page.feed(path.read_text(encoding="utf-8"))
    for source in page.sources:  # embedded, decodable pictures: nothing fetched
        kind, data = re.fullmatch(r"data:image/(png|jpeg);base64,(.+)", source).groups()
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    return page


def check_in_browser(path: Path) -> None:
    """Open a copy of the page in headless Chromium, with a line of script that counts the
    images that did not load, and read the count back from the DOM."""
    probe = path.with_name("probe.html")
    count = ("<script>addEventListener('load', () => document.body.dataset.broken = "
             "[...document.images].filter(i => !i.complete || !i.naturalWidth).length + '/' "
             "+ document.images.length)</script>")
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", count + "</body>"),
                     encoding="utf-8")
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    broken, total = re.search(r'data-broken="(\d+)/(\d+)"', dom).groups()
    assert (int(broken), int(total)) == (0, len(parse_page(path).sources))


@needs_fashion_mnist
def test_pseudo_label_page_with_hidden_truth_changes_and_the_images_to_label(tmp_path,
                                                                            tiny_teacher):
    config = PseudoLabelConfig(max_images=300, threshold=0.0, to_label=12)
    pseudo_label(tiny_teacher, tmp_path / "first", config, quiet=True)
    other = tmp_path / "other-teacher"
    train(quick_config(labels_per_class=3, epochs=2), other, quiet=True)  # the same split
    pseudo_label(other, tmp_path / "second", config, quiet=True)

    result = review(tmp_path / "second")
    page = parse_page(Path(result["path"]))
    text = " ".join(page.text)
    assert "Confident mistakes" in text and "hidden true labels" in text
    assert "The images to label next" in text
    assert len(page.sources) >= 12  # the grids and the 12 images to label, all embedded

    # Changed labels against the earlier labeling, counted by hand.
    from noisystudent.data.unlabeled import teacher_run_unlabeled

    images, _ = teacher_run_unlabeled(tiny_teacher, max_images=300)
    view = LabelingView(tmp_path / "second", images.labels, tmp_path / "first")
    before = torch.cat([p.predicted for p in selection_parts(tmp_path / "first", None)])
    after = torch.cat([p.predicted for p in selection_parts(tmp_path / "second", None)])
    assert view.changed_count == int((before != after).sum()) > 0
    truth = images.labels
    selected = torch.cat([runs.load_weights(p)["copies"] for p in
                          sorted((tmp_path / "second").glob("selected-*.safetensors"))]) > 0
    assert int(view.confusion.sum()) == int(selected.sum())
    assert int(view.confusion.trace()) == int((after[selected] == truth[selected]).sum())
    if CHROMIUM:
        check_in_browser(Path(result["path"]))


def test_an_earlier_labeling_is_matched_across_different_part_boundaries():
    index = torch.arange(0, 200, 2)  # the earlier labeling saw even images only
    predicted = (index // 7) % 3

    def parts(cut: list[int]):
        for start, stop in zip(cut, cut[1:]):
            rows = slice(start, stop)
            yield Part(int(index[start]), torch.ones(stop - start), predicted[rows],
                       index[rows] - index[start])

    earlier = EarlierLabels(parts([0, 13, 50, 51, 100]))
    found_all, labels = [], []
    for start in range(0, 200, 30):  # asked in other blocks, every image
        found, before = earlier.lookup(torch.arange(start, min(start + 30, 200)))
        found_all.append(found)
        labels.append(before[found])
    assert torch.equal(torch.cat(found_all), torch.arange(200) % 2 == 0)
    assert torch.equal(torch.cat(labels), predicted)


def test_many_classes_stay_bounded():
    matrix = torch.randint(0, 5, (300, 300))
    text = confusion_html(matrix, [f"c{i}" for i in range(300)], "Test set")
    assert text.count("<tr>") == MAX_SHOWN + 1  # the most frequent confusions, not 90,000 cells


@needs_fashion_mnist
def test_streamed_shards_page_and_a_train_run_page(tmp_path, tiny_teacher, monkeypatch):
    from noisystudent.data.unlabeled import teacher_run_unlabeled

    images, _ = teacher_run_unlabeled(tiny_teacher, max_images=300)
    pattern = write_shards(tmp_path / "shards", images.images)
    config = PseudoLabelConfig(threshold=0.0, to_label=0)
    pseudo_label(tiny_teacher, tmp_path / "labels", config, unlabeled=pattern, quiet=True)
    page = parse_page(Path(review(tmp_path / "labels")["path"]))
    classes = runs.read_json(tmp_path / "labels" / "summary.json")["classes"]
    assert "hidden true labels" not in " ".join(page.text)  # no truth for a pile of shards
    assert 10 <= len(page.sources) <= 2 * 8 * min(len(classes), MAX_CLASSES)

    # On a large pile the pictures come from a few shards, evenly spread; the counts from all.
    from noisystudent.data.shards import SHARD_BITS
    from noisystudent.reports import review as review_module

    everything = LabelingView(tmp_path / "labels", None, None)
    monkeypatch.setattr(review_module, "SAMPLED_SHARDS", 2)
    sampled = LabelingView(tmp_path / "labels", None, None)
    assert sampled.sampled == {0, 2} and everything.sampled == {0, 1, 2, 3}
    assert set((sampled.highest.rows["index"] >> SHARD_BITS).tolist()) <= {0, 2}
    assert torch.equal(sampled.selected_count, everything.selected_count)

    model_page = parse_page(Path(review(tiny_teacher)["path"]))
    assert "Test set" in " ".join(model_page.text) and len(model_page.sources) == 1  # the curve
    assert (tiny_teacher / REPORT_HTML).is_file()
    with pytest.raises(UserError, match="not a finished run"):
        review(tmp_path / "shards")
