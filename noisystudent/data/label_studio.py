"""The images to label next through Label Studio: an import file beside ``to-label.csv``, and
Label Studio's JSON export read back by ``--extra-labeled``.

``to-label.label-studio.json`` holds one task per image: the image served from a local folder
(``/data/local-files/?d=`` a path relative to the folder holding the file, so Label Studio's
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` is that folder), the file's absolute path, and the
teacher's two top guesses as predictions (pre-annotations) with their probabilities as scores.
``label-studio.xml`` beside it is the labeling interface the tasks fit: one ``Choices`` of the
classes for the image. The export (Label Studio's "JSON" format) comes back as labeled images:
each task's latest choice that was not cancelled; tasks without one are skipped and counted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse
from xml.sax.saxutils import quoteattr

from noisystudent.core import runs
from noisystudent.core.errors import UserError

IMPORT_FILE = "to-label.label-studio.json"
INTERFACE_FILE = "label-studio.xml"
IMAGE, CHOICE = "image", "label"  # the object and control names of the interface
LOCAL_FILES = "/data/local-files/?d="
log = logging.getLogger(__name__)


def labeling_interface(classes: list[str]) -> str:
    """Label Studio's labeling config for choosing one of ``classes`` for an image."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in classes)
    return (f'<View>\n  <Image name="{IMAGE}" value="${IMAGE}"/>\n'
            f'  <Choices name="{CHOICE}" toName="{IMAGE}" choice="single" showInline="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def prediction(label: str, score: float, version: str) -> dict:
    """One pre-annotation: ``label`` chosen for the image, with its ``score``."""
    return {"model_version": version, "score": round(min(max(score, 0.0), 1.0), 4),
            "result": [{"from_name": CHOICE, "to_name": IMAGE, "type": "choices",
                        "value": {"choices": [label]}}]}


def task(relative: str, folder: Path, guesses: list[tuple[str, float]]) -> dict:
    """A task for the image at ``relative`` (to ``folder``, the import file's), with the
    teacher's ``guesses`` (label, probability), best first, as predictions."""
    return {"data": {IMAGE: LOCAL_FILES + quote(relative),
                     "file": str((folder / relative).resolve())},
            "predictions": [prediction(label, score, f"teacher, guess {rank}")
                            for rank, (label, score) in enumerate(guesses, 1)]}


def write_import(folder: Path, tasks: list[dict], classes: list[str]) -> None:
    """The import file and the labeling interface in ``folder``."""
    runs.write_text(folder / IMPORT_FILE, json.dumps(tasks, indent=1) + "\n")
    runs.write_text(folder / INTERFACE_FILE, labeling_interface(classes))


def copy_import(labels: Path, run: Path) -> None:
    """A labeling's import file as the run's own: the local-files paths made relative to the
    run directory (as ``to-label.csv``'s paths are)."""
    source = labels / IMPORT_FILE
    if not source.is_file():
        return
    prefix = labels.relative_to(run).as_posix()
    tasks = json.loads(source.read_text())
    for item in tasks:
        relative = local_path(item["data"][IMAGE])
        item["data"][IMAGE] = LOCAL_FILES + quote(f"{prefix}/{relative}")
    runs.write_text(run / IMPORT_FILE, json.dumps(tasks, indent=1) + "\n")
    (run / INTERFACE_FILE).write_bytes((labels / INTERFACE_FILE).read_bytes())


def local_path(url: str) -> str:
    """The path a local-files URL serves (``/data/local-files/?d=to-label/x.png``)."""
    return parse_qs(urlparse(url).query).get("d", [""])[0]


def is_export(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".json"


def read_export(path: str | Path) -> tuple[list[str], list[str]]:
    """A Label Studio JSON export's labeled images: (image paths, chosen labels), each task's
    latest choice that was not cancelled; tasks without one are counted and left out."""
    path = Path(path).expanduser()
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"Label Studio export {path} does not exist; check the path") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is not a Label Studio JSON export ({err})") from None
    if not isinstance(tasks, list):
        raise UserError(f"{path} is not a Label Studio JSON export (a list of tasks); export "
                        "the project as 'JSON'")
    files, labels, unlabeled = [], [], 0
    for number, item in enumerate(tasks, 1):
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise UserError(f"{path}: task {number} has no 'data'; export the project as "
                            "'JSON'")
        label = latest_choice(item.get("annotations") or [])
        if label is None:
            unlabeled += 1
            continue
        files.append(image_file(item["data"], path.parent, number, path))
        labels.append(label)
    if unlabeled:
        log.info("%s: %d of %d tasks have no choice yet and are left out", path, unlabeled,
                 len(tasks))
    return files, labels


def latest_choice(annotations: list[dict]) -> str | None:
    """The choice of the latest annotation that was not cancelled and chose one."""
    for annotation in reversed(annotations):
        if annotation.get("was_cancelled"):
            continue
        for region in annotation.get("result") or []:
            choices = (region.get("value") or {}).get("choices") or []
            if region.get("type") == "choices" and choices:
                return str(choices[0])
    return None


def image_file(data: dict, folder: Path, number: int, path: Path) -> str:
    """A task's image on disk: its 'file', else its local-files path under ``folder``."""
    candidates = [data.get("file"), local_path(str(data.get(IMAGE, "")))]
    for candidate in filter(None, candidates):
        file = Path(candidate) if Path(candidate).is_absolute() else folder / candidate
        if file.is_file():
            return str(file)
    raise UserError(f"{path}: the image of task {number} ({candidates[0] or candidates[1]}) is "
                    "not on this machine; label the images the import file lists")
