"""report.html: what a run learned from, as pictures (``noisystudent review RUN_DIR``).

One self-contained file beside the run's report.md: pictures embedded as data URIs, no
script, nothing fetched. For a self-training run it holds the iteration table and plots; per
labeling, each class's most and least confident selected pseudo-labels, their confusion against
the hidden true labels and the confident mistakes (where those are known: the unlabeled
images are a split of labeled data), and the images whose label changed since the labeling
before; the kept model's test confusion and per-class accuracy; a few corrupted test images
per corruption; the images to label next. Train, distill and pseudo-label runs get the parts
they have.

The page stays small on any run: one streamed pass over each labeling's parts keeps only
each class's extremes (``PER_ROW``), at most ``MAX_CLASSES`` classes get grids or a matrix
(above that, the most doubtful: lowest mean confidence), lists are cut at ``MAX_SHOWN``, and
each picture is the stored pixels at most ``THUMB`` px a side.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from noisystudent.core import runs
from noisystudent.core.config import SelfTrainConfig
from noisystudent.core.errors import UserError
from noisystudent.core.keep import Comparison
from noisystudent.core.layout import REPORT_JSON, SelfTrainLayout, kept_model, role
from noisystudent.data.imageset import ImageSet
from noisystudent.data.shards import StreamedSource, samples_at
from noisystudent.data.unlabeled import Unlabeled, self_train_images, teacher_run_unlabeled
from noisystudent.labels.directory import SUMMARY, read_copies, read_summary, selection_parts
from noisystudent.labels.selection import Part
from noisystudent.labels.store import label_parts
from noisystudent.labels.to_label import TO_LABEL_CSV, Highest, Lowest, stored_pictures

from .format import percent
from .html import (
    MAX_CLASSES,
    MAX_SHOWN,
    bytes_uri,
    confusion_html,
    data_uri,
    esc,
    figure,
    file_uri,
    grid,
    table,
    write_page,
)
from .metrics import dense_confusion

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
PER_ROW = 8
# Streamed shards are read again for their pictures, so the grids draw from at most this
# many shards, evenly spread (the counts and matrices still cover every shard).
SAMPLED_SHARDS = 8
CORRUPTED_SHOWN = 3
SHOWN_SEVERITY = 3


# -- pictures ----------------------------------------------------------------------------------


def pictures(images: Unlabeled | None, indices: list[int]) -> dict[int, str]:
    """Each index's picture as a data URI; none where the images are not at hand."""
    indices = sorted(set(indices))
    if images is None or not indices:
        return {}
    if isinstance(images, StreamedSource):
        found = {}
        for index, sample in samples_at(images, indices):
            try:
                found[index] = data_uri(Image.open(io.BytesIO(sample.data)))
            except (OSError, ValueError, TypeError):  # unreadable: skipped when labeled too
                continue
        return found
    return {i: data_uri(p) for i, p in zip(indices, stored_pictures(images.images, indices))}



# -- one labeling ------------------------------------------------------------------------------

class EarlierLabels:
    """An earlier labeling of the same images, looked up in ascending index order while both
    stream (label parts are written in index order), holding about one part at a time."""

    def __init__(self, parts: Iterator[Part]):
        self.parts = parts
        self.index = torch.empty(0, dtype=torch.int64)
        self.predicted = torch.empty(0, dtype=torch.int64)

    def lookup(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which of ``index`` the earlier labeling has, and its label for each."""
        if len(index) == 0:
            return torch.zeros(0, dtype=torch.bool), index
        while len(self.index) == 0 or self.index[-1] < index[-1]:
            part = next(self.parts, None)
            if part is None:
                break
            rows = torch.arange(len(part.predicted))
            self.index = torch.cat([self.index, part.index(rows).long()])
            self.predicted = torch.cat([self.predicted, part.predicted.long()])
        if len(self.index) == 0:
            return torch.zeros(len(index), dtype=torch.bool), index
        at = torch.searchsorted(self.index, index).clamp(max=len(self.index) - 1)
        found, before = self.index[at] == index, self.predicted[at]
        later = self.index > index[-1]
        self.index, self.predicted = self.index[later], self.predicted[later]
        return found, before


class LabelingView:
    """What the page shows of one labeling, gathered in one pass over its parts."""

    def __init__(self, directory: Path, truth: torch.Tensor | None, earlier: Path | None):
        self.summary = read_summary(directory)
        self.classes = self.summary["classes"]
        count = len(self.classes)
        self.highest = Highest(PER_ROW, "confidence")
        self.lowest = Lowest(PER_ROW, "confidence")
        self.mistakes = Highest(MAX_SHOWN, "confidence", per_class=False)
        self.changed = Highest(MAX_SHOWN, "confidence", per_class=False)  # the surest of them
        self.changed_count = 0
        self.confidence_sum = torch.zeros(count, dtype=torch.float64)
        self.selected_count = torch.zeros(count, dtype=torch.float64)
        known = truth is not None and bool((truth >= 0).any())
        self.confusion = torch.zeros(count, count, dtype=torch.int64) if known else None
        previous = EarlierLabels(selection_parts(earlier, None)) if earlier else None
        paths = label_parts(directory)
        self.sampled = sampled_parts(len(paths), "selected_shards" in self.summary)
        for i, (path, part) in enumerate(zip(paths, selection_parts(directory, None))):
            selected = read_copies(path) > 0
            self._add(part, selected, truth if known else None, previous, i in self.sampled)
        self.parts = len(paths)

    def _add(self, part: Part, selected: torch.Tensor, truth: torch.Tensor | None,
             previous: EarlierLabels | None, pictured: bool) -> None:
        index = part.index(torch.arange(len(part.predicted))).long()
        rows = {"index": index, "predicted": part.predicted.long(),
                "confidence": part.confidence.float()}
        chosen = {name: values[selected] for name, values in rows.items()}
        if pictured:
            self.highest.add(chosen)
            self.lowest.add(chosen)
        self.confidence_sum += torch.bincount(chosen["predicted"], chosen["confidence"].double(),
                                              minlength=len(self.classes))
        self.selected_count += torch.bincount(chosen["predicted"], minlength=len(self.classes))
        if truth is not None:
            true = truth[chosen["index"]]
            known = true >= 0
            flat = true[known] * len(self.classes) + chosen["predicted"][known]
            self.confusion += torch.bincount(flat, minlength=len(self.classes) ** 2).view(
                len(self.classes), -1)
            wrong = known & (true != chosen["predicted"]) & pictured
            self.mistakes.add({**{k: v[wrong] for k, v in chosen.items()}, "true": true[wrong]})
        if previous is not None:
            found, before = previous.lookup(index)
            moved = found & (before != rows["predicted"])
            self.changed_count += int(moved.sum())
            moved &= pictured
            self.changed.add({**{k: v[moved] for k, v in rows.items()},
                              "before": before[moved]})

    def shown_classes(self) -> list[int]:
        """Every class, or the MAX_CLASSES with the lowest mean selected confidence."""
        count = len(self.classes)
        if count <= MAX_CLASSES:
            return list(range(count))
        mean = self.confidence_sum / self.selected_count.clamp(min=1)
        mean[self.selected_count == 0] = float("inf")
        return sorted(mean.argsort()[:MAX_CLASSES].tolist())

    def html(self, images: Unlabeled | None, title: str) -> str:
        s, names = self.summary, self.classes
        shown = self.shown_classes()
        grids = {c: (self.highest.of_class(c), self.lowest.of_class(c)) for c in shown}
        mistakes, changed = self.mistakes.rows or {}, self.changed.rows or {}
        wanted = [int(i) for high, low in grids.values() for rows in (high, low)
                  for i in rows.get("index", [])]
        wanted += [int(i) for rows in (mistakes, changed) for i in rows.get("index", [])]
        uris = pictures(images, wanted)
        parts = [f"<h2>{esc(title)}</h2>",
                 f"<p>{s['unlabeled_images']:,} images labeled by {esc(s['teacher']['model'])} "
                 f"({esc(s['unlabeled_source'])}); {s['selected']:,} selected (with copies), "
                 f"mean confidence {s['mean_confidence'] or 0:.3f}; pseudo-label accuracy "
                 f"{percent(s.get('pseudo_label_accuracy'), 1)}, on the selected "
                 f"{percent(s.get('selected_accuracy'), 1)}.</p>"]
        if len(self.sampled) < self.parts:
            parts.append(f'<p class="note">Pictures from {len(self.sampled)} of the '
                         f"{self.parts:,} shards, evenly spread; counts and matrices cover "
                         "all.</p>")
        if images is None:
            parts.append('<p class="note">The unlabeled images are not at hand here, so the '
                         "grids show labels only.</p>")
        if self.confusion is not None:
            parts.append(confusion_html(self.confusion, names, "Selected pseudo-labels against "
                                        "the hidden true labels (never used for training)"))
            parts.append("<h3>Confident mistakes</h3>")
            parts.append(grid([figure(uris.get(int(i)), f"{names[int(p)]} {c:.2f} (is "
                                      f"{names[int(t)]})", wrong=True)
                               for i, p, c, t in _columns(mistakes, "index", "predicted",
                                                          "confidence", "true")]))
        note = "" if len(shown) == len(names) else (
            f" (the {len(shown)} of {len(names)} classes with the lowest mean confidence)")
        parts.append(f"<h3>Per class: the most and the least confident selected images{note}</h3>")
        for c in shown:
            sides = [f"<div><small>{side}</small>" + grid(
                [figure(uris.get(int(i)), f"{conf:.2f}")
                 for i, conf in _columns(rows, "index", "confidence")]) + "</div>"
                for side, rows in zip(("most confident", "least confident"), grids[c])]
            parts.append(f"<h4>{esc(names[c])}: {int(self.selected_count[c]):,} selected</h4>"
                         f"<div class=row>{''.join(sides)}</div>")
        if self.changed.seen:
            parts.append(f"<h3>Changed since the labeling before: {self.changed_count:,} "
                         f"images (the {len(changed.get('index', []))} its teacher is surest "
                         "of)</h3>")
            parts.append(grid([figure(uris.get(int(i)), f"{names[int(b)]} → {names[int(p)]}")
                               for i, b, p in _columns(changed, "index", "before",
                                                       "predicted")]))
        return "\n".join(parts)


def sampled_parts(count: int, streamed: bool) -> set[int]:
    """The parts (one per shard when streamed) whose images the grids may show."""
    if not streamed or count <= SAMPLED_SHARDS:
        return set(range(count))
    return {i * count // SAMPLED_SHARDS for i in range(SAMPLED_SHARDS)}


def _columns(rows: dict[str, torch.Tensor], *names: str) -> Iterator[tuple]:
    if not rows:
        return iter(())
    return zip(*(rows[name].tolist() for name in names))


# -- the other sections ------------------------------------------------------------------------

def test_html(model_dir: Path, title: str) -> str:
    """The model's test confusion and per-class accuracy (metrics.json; older runs: measured
    now by ``evaluate``)."""
    metrics = runs.read_json(model_dir / runs.METRICS)
    classes = runs.read_json(model_dir / runs.MODEL_INFO)["classes"]
    if metrics.get("test_top1") is None:
        return f"<h2>{esc(title)}</h2><p class=note>No test set.</p>"
    if "test_confusion" in metrics:
        matrix = dense_confusion(metrics["test_confusion"], len(classes))
    else:
        from .evaluate import evaluate

        matrix = torch.tensor(evaluate(model_dir, quiet=True)["confusion"])
    per_class = metrics.get("per_class") or {}
    totals = matrix.sum(1)
    rows = [[name, percent(per_class.get(name), 1), int(totals[i])]
            for i, name in enumerate(classes)]
    if len(rows) > MAX_CLASSES:  # the weakest classes
        rows = sorted(rows, key=lambda r: per_class.get(r[0], 0.0))[:MAX_CLASSES]
    return (f"<h2>{esc(title)}</h2><p>Test top-1 {percent(metrics['test_top1'], 2)} on "
            f"{int(totals.sum()):,} images.</p><div class=row><div>"
            + table(["class", "accuracy", "images"], rows) + "</div><div>"
            + confusion_html(matrix, classes, "Test set") + "</div></div>")


def corruptions_html(model_dir: Path, rows: list[dict], kept: dict, test_set: ImageSet | None,
                     device: str) -> str:
    """A few test images under each corruption (severity SHOWN_SEVERITY), with the kept
    model's call on each and its error on that corruption against the teacher's."""
    from noisystudent.core.device import resolve_device, resolve_precision
    from noisystudent.data.loaders import ImageBatches
    from noisystudent.models.inference import predict_logits
    from noisystudent.models.saved import load_trained
    from noisystudent.models.transforms import CleanPipeline

    from .evaluate import test_set_of
    from .robustness import SEVERITIES, corrupted_sets, corruption_names

    teacher = rows[0]
    device = resolve_device(device)
    trained = load_trained(model_dir, device)
    test_set = test_set if test_set is not None else test_set_of(trained)
    names = list(kept["corruption_errors"])
    shown = test_set.images[:CORRUPTED_SHOWN]
    sets = corrupted_sets(shown, [n for n in corruption_names() if n in names])
    images = torch.cat([sets[(n, SHOWN_SEVERITY)] for n in names])
    labels = test_set.labels[:CORRUPTED_SHOWN].repeat(len(names))
    logits = predict_logits(trained.model, CleanPipeline(trained.spec),
                            ImageBatches(images, labels, 256, device), device=device,
                            dtype=resolve_precision(trained.config["precision"], device,
                                                    training=False))
    called = logits.argmax(1)
    uris = [data_uri(p) for p in stored_pictures(images, list(range(len(images))))]
    parts = [f"<h2>Corrupted test images (severity {SHOWN_SEVERITY} of {len(SEVERITIES)})</h2>"
             f"<p>The kept model ({esc(kept['role'])}) on the first {len(shown)} test images "
             f"under each corruption; the error is over severities {SEVERITIES[0]}-"
             f"{SEVERITIES[-1]} and "
             f"{kept['corruption_images']} images, the teacher's in brackets.</p>"]
    classes = trained.classes
    for n, name in enumerate(names):
        error = sum(kept["corruption_errors"][name]) / len(SEVERITIES)
        before = sum(teacher["corruption_errors"][name]) / len(SEVERITIES)
        figures = [figure(uris[i], classes[int(called[i])], wrong=bool(called[i] != labels[i]))
                   for i in range(n * len(shown), (n + 1) * len(shown))]
        parts.append(f"<div class=row><div style='width:220px'>{esc(name.replace('_', ' '))}: "
                     f"error {percent(error, 1)} ({percent(before, 1)})</div>{grid(figures)}</div>")
    return "\n".join(parts)


def to_label_html(csv_path: Path) -> str:
    """The first MAX_SHOWN images of a to-label.csv, with the teacher's guess and margin."""
    if not csv_path.is_file():
        return ""
    with open(csv_path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    figures = []
    for row in rows[:MAX_SHOWN]:
        try:
            uri = data_uri(Image.open(csv_path.parent / row["path"]))
        except OSError:
            uri = None
        figures.append(figure(uri, f"{row['guess']}? {float(row['margin']):.2f}"))
    return (f"<h2>The images to label next</h2><p>{len(rows)} images in "
            f"<code>{esc(csv_path.name)}</code> (the lowest margins between the teacher's two "
            f"likeliest classes, the classes taking turns); the first {len(figures)}, with the "
            "teacher's guess and margin. Fill in the label column and pass the file to "
            "<code>--extra-labeled</code>.</p>" + grid(figures))


def iterations_html(run: Path, report: dict) -> str:
    from .report import ACCURACY_PNG, CORRUPTIONS_PNG, table_cells

    rows = report["rows"]
    kept = next(i for i, r in enumerate(rows) if r["role"] == report.get("final_role"))
    header, cells = table_cells(rows, kept)
    plots = "".join(f'<img src="{file_uri(run / name)}" alt="{name}">'
                    for name in (ACCURACY_PNG, CORRUPTIONS_PNG) if (run / name).is_file())
    warnings = "".join(f"<p class=warn>Warning: {esc(line)}</p>"
                       for line in report.get("regressions", []))
    compared = "".join(f"<li>{esc(Comparison(**c).sentence())}</li>"
                       for c in report.get("comparisons", []))
    compared = f"<ul>{compared}</ul>" if compared else ""
    return ("<h2>Iterations</h2>" + table(header, cells) + warnings
            + f"<p>Kept: {esc(report.get('final_role', ''))} (by "
            f"{esc(report.get('final_chosen_by', 'last'))}).</p>" + compared
            + f"<div class=plots>{plots}</div>")


def curve_html(model_dir: Path) -> str:
    """The training loss (and validation top-1) per epoch, from metrics.jsonl."""
    from matplotlib.figure import Figure

    rows = runs.read_jsonl(model_dir / runs.METRICS_LOG) if \
        (model_dir / runs.METRICS_LOG).is_file() else []
    if not rows:
        return ""
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    ax.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], marker=".", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    return f'<div class=plots><img src="{bytes_uri(buffer.getvalue())}" alt="training loss"></div>'


# -- pages -------------------------------------------------------------------------------------


def review_self_train(run: Path, *, unlabeled: Unlabeled | None = None,
                      test_set: ImageSet | None = None, device: str = "auto") -> Path:
    """report.html of a finished self-training run; ``unlabeled`` and ``test_set`` are the
    loop's (else loaded again as the loop loads them)."""
    report = runs.read_json(run / REPORT_JSON)
    config = SelfTrainConfig.model_validate(runs.read_yaml(run / runs.CONFIG))
    layout = SelfTrainLayout(run, config.teacher_run)
    if unlabeled is None or test_set is None:
        unlabeled, test_set = self_train_images(config, layout)
    truth = unlabeled.labels if isinstance(unlabeled, ImageSet) else None
    model_dir = kept_model(run)
    kept = next((r for r in report["rows"] if r["role"] == report.get("final_role")),
                report["rows"][-1])
    sections = [iterations_html(run, report),
                test_html(model_dir, f"Test set: the kept model ({kept['role']})")]
    earlier = None
    for k in range(1, config.iterations + 1):
        labels = layout.pseudo_labels(k)
        if not (labels / SUMMARY).is_file():
            break
        view = LabelingView(labels, truth, earlier)
        sections.append(view.html(unlabeled, f"Iteration {k}: what the {role(k - 1)} labeled"))
        earlier = labels
    if "corruption_errors" in kept:
        sections.append(corruptions_html(model_dir, report["rows"], kept, test_set, device))
    sections.append(to_label_html(run / TO_LABEL_CSV))
    return write_page(run / REPORT_HTML, f"Noisy Student self-training: {run.name}", sections)


def review_labels(directory: Path) -> Path:
    """report.html of a pseudo-label directory (its images loaded as pseudo-label does)."""
    summary = read_summary(directory)
    try:
        images, _ = teacher_run_unlabeled(summary["teacher"]["run"],
                                          summary.get("unlabeled_folder"),
                                          summary.get("max_images", 0))
    except UserError as err:  # the teacher run or the images moved: labels without pictures
        log.warning("warning: %s; the page shows no pictures", err)
        images = None
    truth = images.labels if isinstance(images, ImageSet) else None
    sections = [LabelingView(directory, truth, None).html(images, "What the teacher labeled"),
                to_label_html(directory / TO_LABEL_CSV)]
    return write_page(directory / REPORT_HTML, f"Pseudo-labels: {directory.name}", sections)


def review_model(run: Path) -> Path:
    """report.html of a train or distill run: its settings, training curve and test set."""
    info = runs.read_json(run / runs.MODEL_INFO)
    metrics = runs.read_json(run / runs.METRICS)
    facts = [["model", info["model"]], ["input size", info["input"]["size"]],
             ["classes", len(info["classes"])],
             ["validation top-1", percent(metrics.get("val_top1"), 2)],
             ["test top-1", percent(metrics.get("test_top1"), 2)]]
    sections = [table(["", ""], facts), curve_html(run), test_html(run, "Test set")]
    return write_page(run / REPORT_HTML, f"Run: {run.name}", sections)


def review(run_dir: str | Path, *, device: str = "auto") -> dict:
    """The page for any finished run: self-train, pseudo-label, train or distill. Returns
    where it went, its size and how long it took."""
    run = Path(run_dir)
    started = time.perf_counter()
    if (run / REPORT_JSON).is_file() and (run / runs.CONFIG).is_file():
        path = review_self_train(run, device=device)
    elif (run / SUMMARY).is_file():
        path = review_labels(run)
    elif (run / runs.METRICS).is_file() and (run / runs.MODEL_INFO).is_file():
        path = review_model(run)
    else:
        raise UserError(f"{run} is not a finished run (no {REPORT_JSON}, {SUMMARY} or "
                        f"{runs.METRICS})")
    return {"path": str(path), "bytes": path.stat().st_size,
            "seconds": time.perf_counter() - started}
