"""Tests for noisystudent.data: IDX, Fashion-MNIST, user image folders/manifests, splits."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from noisystudent.core.errors import UserError
from noisystudent.data import fashion_mnist as fm
from noisystudent.data.arrays import NpyImages
from noisystudent.data.decode import UnreadableImage, open_image
from noisystudent.data.idx import read_idx
from noisystudent.data.images import load_image_folder, load_manifest, load_unlabeled_folder
from noisystudent.data.imageset import ImageSet
from noisystudent.data.splits import load_split, make_split, save_split

# ---------------------------------------------------------------- IDX


def write_idx(path: Path, arr: np.ndarray, code: int = 0x08, gz: bool = False) -> None:
    dtype = {0x08: ">u1", 0x0C: ">i4"}[code]
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data += arr.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", arr, gz=gz)
    out = read_idx(tmp_path / "a")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)

    ints = np.array([-5, 70000, 3], dtype=np.int32)
    write_idx(tmp_path / "b", ints, code=0x0C, gz=gz)
    out = read_idx(tmp_path / "b")
    assert out.dtype == np.int32 and out.dtype.byteorder in "=|<" or out.dtype.isnative
    np.testing.assert_array_equal(out, ints)


def test_idx_malformed(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(UserError, match="magic"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((4, 4), np.uint8)
    write_idx(tmp_path / "short", arr)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "code").write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 0]))
    with pytest.raises(UserError, match="data type"):
        read_idx(tmp_path / "code")
    with pytest.raises(UserError, match="not found"):
        read_idx(tmp_path / "missing")


# ---------------------------------------------------------------- Fashion-MNIST


def _real_fashion_mnist_dir() -> Path:
    try:
        return fm.find_fashion_mnist(download=False)
    except UserError as e:
        pytest.skip(f"Fashion-MNIST files not available: {e}")


def test_fashion_mnist_real():
    d = _real_fashion_mnist_dir()
    for split, n in (("train", 60000), ("test", 10000)):
        s = fm.load_fashion_mnist(split, data_dir=d, download=False)
        assert s.images.shape == (n, 1, 28, 28) and s.images.dtype == torch.uint8
        assert s.labels.shape == (n,) and s.labels.dtype == torch.int64
        assert s.labels.min() == 0 and s.labels.max() == 9
        assert torch.bincount(s.labels).tolist() == [n // 10] * 10
        assert s.classes == fm.FASHION_MNIST_CLASSES and len(s.classes) == 10
    # The in-memory cache must not leak caller modifications.
    s = fm.load_fashion_mnist("test", data_dir=d, download=False)
    s.images.zero_()
    assert fm.load_fashion_mnist("test", data_dir=d, download=False).images.sum() > 0


def test_fashion_mnist_bad_split():
    with pytest.raises(UserError, match="train"):
        fm.load_fashion_mnist("validation", download=False)


def _fake_dir(path: Path, gz: bool = True) -> Path:
    path.mkdir(parents=True)
    for base in fm.FILES:
        (path / (base + (".gz" if gz else ""))).write_bytes(b"")
    return path


@pytest.fixture
def no_default_dirs(tmp_path, monkeypatch):
    """Point the home cache and the system dir at empty places."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.delenv(fm.ENV_VAR, raising=False)


def test_find_precedence(tmp_path, monkeypatch, no_default_dirs):
    arg_dir = _fake_dir(tmp_path / "arg")
    env_dir = _fake_dir(tmp_path / "env", gz=False)  # uncompressed names count too
    sys_dir = _fake_dir(tmp_path / "system")
    assert fm.find_fashion_mnist(download=False) == sys_dir
    cache = _fake_dir(fm.cache_dir())
    assert fm.find_fashion_mnist(download=False) == cache
    monkeypatch.setenv(fm.ENV_VAR, str(env_dir))
    assert fm.find_fashion_mnist(download=False) == env_dir
    assert fm.find_fashion_mnist(arg_dir, download=False) == arg_dir
    # An incomplete directory is passed over.
    (arg_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    assert fm.find_fashion_mnist(arg_dir, download=False) == env_dir


def test_find_nothing_one_line_error(tmp_path, no_default_dirs):
    with pytest.raises(UserError) as err:
        fm.find_fashion_mnist(tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--data-dir" in msg and fm.ENV_VAR in msg
    assert str(tmp_path / "nowhere") in msg and str(tmp_path / "system") in msg


class _FakeResponse:
    def __init__(self, data: bytes):
        self.data = data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self) -> bytes:
        return self.data


def test_download_checks_md5(no_default_dirs, monkeypatch):
    payload = {base: base.encode() for base in fm.FILES}
    monkeypatch.setattr(
        fm.urllib.request,
        "urlopen",
        lambda url, timeout: _FakeResponse(payload[url.rsplit("/", 1)[1][:-3]]),
    )
    with pytest.raises(UserError, match="checksum mismatch"):
        fm.find_fashion_mnist()
    assert not any(fm.cache_dir().glob("*"))  # nothing half-written left behind

    md5s = {base: hashlib.md5(data).hexdigest() for base, data in payload.items()}
    monkeypatch.setattr(fm, "FILES", md5s)
    assert fm.find_fashion_mnist() == fm.cache_dir()
    assert sorted(p.name for p in fm.cache_dir().iterdir()) == sorted(b + ".gz" for b in fm.FILES)


# ---------------------------------------------------------------- user images


def _save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _mode_images(d: Path) -> dict[str, tuple[int, int, int]]:
    """Write one uniform 6x4 image per mode; return file name -> expected RGB value."""
    size = (6, 4)
    _save(Image.new("L", size, 100), d / "l.png")
    _save(Image.new("RGB", size, (10, 20, 30)), d / "rgb.jpg", quality=100)
    _save(Image.new("RGBA", size, (0, 0, 0, 0)), d / "rgba.png")
    p = Image.new("P", size, 0)
    p.putpalette([200, 0, 0, 0, 0, 0] + [0] * 762)
    _save(p, d / "p.png")
    _save(p, d / "p_trans.png", transparency=0)
    _save(p, d / "p_trans.gif", transparency=0)
    _save(Image.new("CMYK", size, (0, 0, 0, 0)), d / "cmyk.tif")
    _save(Image.fromarray(np.full((4, 6), 65535, np.uint16)), d / "i16_max.png")
    _save(Image.fromarray(np.full((4, 6), 257 * 100, np.uint16)), d / "i16_100.tif")
    _save(Image.new("1", size, 1), d / "one.bmp")
    _save(Image.new("LA", size, (50, 0)), d / "la.png")
    _save(Image.new("RGB", size, (1, 2, 3)), d / "UPPER.PNG")
    return {
        "l.png": (100, 100, 100),
        "rgb.jpg": (10, 20, 30),
        "rgba.png": (255, 255, 255),
        "p.png": (200, 0, 0),
        "p_trans.png": (255, 255, 255),
        "p_trans.gif": (255, 255, 255),
        "cmyk.tif": (255, 255, 255),
        "i16_max.png": (255, 255, 255),
        "i16_100.tif": (100, 100, 100),
        "one.bmp": (255, 255, 255),
        "la.png": (255, 255, 255),
        "UPPER.PNG": (1, 2, 3),
    }


def test_image_folder_all_modes(tmp_path):
    expected = _mode_images(tmp_path / "root" / "b_modes")
    _save(
        Image.new("RGB", (9, 9), (7, 7, 7)), tmp_path / "root" / "a_nested" / "x" / "y" / "deep.png"
    )
    (tmp_path / "root" / "notes.txt").write_text("ignored")

    s = load_image_folder(tmp_path / "root", size=8)
    assert s.classes == ["a_nested", "b_modes"]
    assert s.images.shape == (len(expected) + 1, 3, 8, 8) and s.images.dtype == torch.uint8
    assert s.labels.dtype == torch.int64 and s.skipped == []
    assert s.labels.tolist() == [0] + [1] * len(expected)
    for i, path in enumerate(s.paths):
        name = Path(path).name
        want = (7, 7, 7) if name == "deep.png" else expected[name]
        got = s.images[i].float().mean(dim=(1, 2))
        assert torch.allclose(got, torch.tensor(want, dtype=torch.float), atol=2), (name, got)

    gray = load_image_folder(tmp_path / "root", size=5, channels=1)
    assert gray.images.shape == (len(expected) + 1, 1, 5, 5) and gray.channels == 1


def test_open_image_modes_and_center_crop(tmp_path):
    arr = np.zeros((4, 12), np.uint8)
    arr[:, 4:8] = 255  # only the middle third survives a center crop
    _save(Image.fromarray(arr), tmp_path / "wide.png")
    s = load_unlabeled_folder(tmp_path, size=4)
    assert s.images.shape == (1, 3, 4, 4) and (s.images == 255).all()

    assert open_image(tmp_path / "wide.png", 1).mode == "L"
    assert open_image(tmp_path / "wide.png", 3).mode == "RGB"
    with pytest.raises(UnreadableImage):
        open_image(tmp_path / "missing.png", 3)


def _broken_images(d: Path) -> list[str]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    png = _save(noise, d / "trunc.png")
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    jpg = _save(noise, d / "trunc.jpg")
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    (d / "fake.png").write_text("this is not an image")
    (d / "text.jpg").write_text("a text file named .jpg")
    (d / "empty.jpg").write_bytes(b"")
    return sorted(str(d / name) for name in (png.name, jpg.name, "fake.png", "text.jpg",
                                             "empty.jpg"))


def test_unreadable_images_skipped_and_strict(tmp_path):
    root = tmp_path / "root"
    _save(Image.new("RGB", (8, 8), (1, 2, 3)), root / "cls" / "ok.png")
    broken = _broken_images(root / "cls")
    with pytest.warns(UserWarning, match="skipped 5 unreadable images") as rec:
        s = load_image_folder(root, size=8)
    assert len(s) == 1 and sorted(s.skipped) == broken
    msg = str(rec[0].message)
    assert all(b in msg for b in broken)

    with pytest.raises(UserError, match="empty.jpg") as info:  # the first, in path order
        load_image_folder(root, size=8, strict=True)
    assert "\n" not in str(info.value)


def test_many_unreadable_warning_is_abbreviated(tmp_path):
    _save(Image.new("L", (4, 4)), tmp_path / "ok.png")
    for i in range(12):
        (tmp_path / f"bad{i:02d}.jpg").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="skipped 12 unreadable images: .* and 2 more"):
        s = load_unlabeled_folder(tmp_path, size=4)
    assert len(s) == 1 and len(s.skipped) == 12


def test_unlabeled_nested_folder(tmp_path):
    _save(Image.new("RGB", (5, 5)), tmp_path / "b.png")
    _save(Image.new("L", (5, 7)), tmp_path / "x" / "y" / "a.jpg")
    _save(Image.new("RGB", (5, 5)), tmp_path / "a.bmp")
    _save(Image.new("RGB", (5, 5)), tmp_path / ".hidden" / "c.png")
    (tmp_path / "._junk.png").write_bytes(b"resource fork")
    s = load_unlabeled_folder(tmp_path, size=6)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in s.paths] == [
        "a.bmp",
        "b.png",
        "x/y/a.jpg",
    ]
    assert s.labels.tolist() == [-1, -1, -1] and s.classes == []
    assert s.images.shape == (3, 3, 6, 6)


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_image_folder(tmp_path / "missing", size=8)
    with pytest.raises(UserError, match="no class folders"):
        load_image_folder(tmp_path, size=8)
    (tmp_path / "cls").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_image_folder(tmp_path, size=8)
    with pytest.raises(UserError, match="no images"):
        load_unlabeled_folder(tmp_path, size=8)
    (tmp_path / "cls" / "bad.png").write_bytes(b"x")
    with pytest.raises(UserError, match="none of the 1 images"), pytest.warns(UserWarning):
        load_image_folder(tmp_path, size=8)


def test_manifest(tmp_path):
    _save(Image.new("RGB", (8, 8), (10, 10, 10)), tmp_path / "data" / "imgs" / "a.png")
    _save(Image.new("RGB", (8, 8), (20, 20, 20)), tmp_path / "data" / "imgs" / "b.png")
    absolute = _save(Image.new("RGB", (8, 8), (30, 30, 30)), tmp_path / "data" / "more" / "c.png")
    csv_path = tmp_path / "data" / "list.csv"
    csv_path.write_text(f"path,label\nimgs/a.png,zebra\nimgs/b.png,\n\n{absolute},ant\n")
    s = load_manifest(csv_path, size=4)
    assert s.classes == ["ant", "zebra"]
    assert s.labels.tolist() == [1, -1, 0]
    assert s.images[:, 0, 0, 0].tolist() == [10, 20, 30]

    s = load_manifest(csv_path, size=4, channels=1, classes=["zebra", "ant", "cow"])
    assert s.classes == ["zebra", "ant", "cow"] and s.labels.tolist() == [0, -1, 1]
    assert s.images.shape == (3, 1, 4, 4)

    with pytest.raises(UserError, match="line 5: label 'ant'"):
        load_manifest(csv_path, size=4, classes=["zebra"])

    bad = tmp_path / "data" / "bad.csv"
    bad.write_text("file,label\nimgs/a.png,zebra\n")
    with pytest.raises(UserError, match="line 1.*path"):
        load_manifest(bad, size=4)
    with pytest.raises(UserError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv", size=4)


@pytest.mark.parametrize("path", ["../secret.png", "imgs/../../secret.png", "/etc/passwd"])
def test_manifest_paths_escaping_the_data_root_are_refused(tmp_path, path):
    _save(Image.new("L", (4, 4)), tmp_path / "secret.png")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "m.csv").write_text(f"path,label\n{path},x\n")
    with pytest.raises(UserError, match="line 2: .* is outside the manifest's folder"):
        load_manifest(tmp_path / "data" / "m.csv", size=4)


def test_manifest_missing_file_skipped(tmp_path):
    _save(Image.new("L", (4, 4)), tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,x\ngone.png,y\n")
    with pytest.warns(UserWarning, match="gone.png"):
        s = load_manifest(tmp_path / "m.csv", size=4)
    assert len(s) == 1 and s.classes == ["x", "y"] and s.skipped == [str(tmp_path / "gone.png")]


# ---------------------------------------------------------------- ImageSet


def test_imageset_subset_in_memory_and_streamed(tmp_path):
    s = ImageSet(
        images=torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous(),
        labels=torch.tensor([0, 1, 0, 1, -1]),
        classes=["a", "b"],
        paths=[f"p{i}" for i in range(5)],
    )
    assert len(s) == 5 and s.channels == 1
    for idx in ([3, 1], np.array([3, 1]), torch.tensor([3, 1])):
        sub = s.subset(idx)
        assert (
            sub.labels.tolist() == [1, 1]
            and sub.paths == ["p3", "p1"]
            and sub.classes == ["a", "b"]
        )
        assert sub.images[:, 0, 0, 0].tolist() == [3, 1]

    # Backed by a .npy (streamed unlabeled images): the subset stays a lazy view of the rows.
    np.save(tmp_path / "images.npy", s.images.numpy())
    streamed = ImageSet(images=NpyImages(tmp_path / "images.npy"), labels=s.labels,
                        classes=[], skipped=["broken.png"])
    sub = streamed.subset([4, 0, 2]).subset([2, 0])
    assert isinstance(sub.images, NpyImages) and len(sub) == 2 and sub.channels == 1
    assert torch.equal(sub.images.read(), s.images[[2, 4]])
    assert sub.labels.tolist() == [0, -1] and sub.paths is None
    assert sub.skipped == ["broken.png"] and sub.skipped is not streamed.skipped


# ---------------------------------------------------------------- splits


LABELS = np.repeat(np.arange(4), 20)  # 4 classes x 20


def test_split_counts_and_disjoint():
    sp = make_split(LABELS, labels_per_class=3, val_per_class=2, seed=0)
    assert set(sp) == {"labeled", "val", "unlabeled"}
    allidx = np.concatenate(list(sp.values()))
    assert sorted(allidx.tolist()) == list(range(len(LABELS)))
    for k, v in sp.items():
        assert v.dtype == np.int64 and (np.diff(v) > 0).all(), k
    assert np.bincount(LABELS[sp["labeled"]]).tolist() == [3] * 4
    assert np.bincount(LABELS[sp["val"]]).tolist() == [2] * 4
    assert len(sp["unlabeled"]) == 80 - 20


def test_split_reproducible():
    a = make_split(torch.as_tensor(LABELS), 3, 2, seed=1)
    b = make_split(LABELS, 3, 2, seed=1)
    c = make_split(LABELS, 3, 2, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["labeled"], c["labeled"])


def test_val_fraction_holds_out_labels_and_leaves_the_unlabeled_pool_alone():
    plain = make_split(LABELS, 10, seed=3)
    held = make_split(LABELS, 10, seed=3, val_fraction=0.2)
    assert np.array_equal(plain["unlabeled"], held["unlabeled"])
    assert np.bincount(LABELS[held["val"]]).tolist() == [2] * 4
    assert np.bincount(LABELS[held["labeled"]]).tolist() == [8] * 4
    assert sorted(np.concatenate([held["val"], held["labeled"]])) == sorted(plain["labeled"])
    # At least one where a class has two labeled images, never its last one.
    assert np.bincount(LABELS[make_split(LABELS, 2, seed=0, val_fraction=0.1)["val"]]
                       ).tolist() == [1] * 4
    assert len(make_split(LABELS, 1, seed=0, val_fraction=0.5)["val"]) == 0
    # An explicit val_per_class wins: drawn from the rest, the labels are all trained on.
    explicit = make_split(LABELS, 3, val_per_class=2, seed=0, val_fraction=0.5)
    assert np.bincount(LABELS[explicit["labeled"]]).tolist() == [3] * 4
    with pytest.raises(UserError, match="fraction"):
        make_split(LABELS, 3, seed=0, val_fraction=1.0)


def test_split_all_labeled_and_unknown_labels():
    labels = np.concatenate([LABELS, [-1, -1]])
    for lpc in (0, None):
        sp = make_split(labels, lpc, val_per_class=5, seed=0)
        assert len(sp["labeled"]) == 60 and len(sp["val"]) == 20
        assert sp["unlabeled"].tolist() == [80, 81]


def test_split_errors():
    with pytest.raises(UserError, match="class 0 has only 20 images"):
        make_split(LABELS, 18, val_per_class=3)
    with pytest.raises(UserError, match=">= 0"):
        make_split(LABELS, -1)


def test_split_save_load(tmp_path):
    sp = make_split(LABELS, 3, 2, seed=7)
    path = tmp_path / "sub" / "split.json"
    save_split(path, sp, seed=7, labels_per_class=3)
    back = load_split(path)
    assert all(np.array_equal(sp[k], back[k]) and back[k].dtype == np.int64 for k in sp)
    doc = json.loads(path.read_text())
    assert doc["seed"] == 7 and doc["labels_per_class"] == 3
    assert list(path.parent.iterdir()) == [path]  # no temp files left behind

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_split(tmp_path / "bad.json")
    with pytest.raises(UserError, match="does not exist"):
        load_split(tmp_path / "none.json")
