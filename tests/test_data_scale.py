"""The field's data sets, read by torchvision's own loaders (or its ImageFolder listing) from tiny files in the
real formats, written here: CIFAR-100's pickles, SVHN's .mat files with its extra split, Tiny-ImageNet's folder
layout with val_annotations.txt, a user's PNG class folders, and the DDPM/EDM .npz of auxiliary data."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
import torchvision.datasets.svhn
from PIL import Image

import iat.data_folders
from iat.cli import main
from iat.data import dataset_info, load_data
from iat.data_aux import AuxData
from iat.errors import UsageError

RNG = np.random.RandomState(0)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image_folder(root, classes=("cat", "dog"), per_class=3, size=8, val_classes=None):
    """PATH/train/CLASS/k.png and PATH/val/CLASS/k.png of random RGB pixels; returns {path: pixels}."""
    pixels = {}
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for c in names:
            for k in range(per_class):
                a = RNG.randint(0, 256, (size, size, 3)).astype(np.uint8)
                _png(root / split / c / f"{k}.png", a)
                pixels[root / split / c / f"{k}.png"] = a
    return pixels


def test_cifar100_in_torchvision_format(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 6), ("test", 4)):
        batch = {"data": RNG.randint(0, 256, (n, 3072)).astype(np.uint8), "fine_labels": [99, 0, 42, 7, 5, 3][:n],
                 "coarse_labels": [0] * n}
        pickle.dump(batch, open(folder / name, "wb"))
    pickle.dump({"fine_label_names": [str(i) for i in range(100)]}, open(folder / "meta", "wb"))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    x, y = load_data("cifar100", "train", data_dir=tmp_path)
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [99, 0, 42, 7, 5, 3]
    raw = pickle.load(open(folder / "train", "rb"))["data"][1].reshape(3, 32, 32)
    assert torch.equal((x[1] * 255).round().to(torch.uint8), torch.from_numpy(raw))
    assert dataset_info("cifar100").num_classes == 100 and load_data("cifar100", "test", tmp_path)[0].shape[0] == 4


def test_svhn_extra_joins_the_training_split(tmp_path, monkeypatch):
    from scipy.io import savemat

    for split, labels in (("train", [10, 1, 2]), ("extra", [3, 4, 5, 6, 7])):
        X = RNG.randint(0, 256, (32, 32, 3, len(labels))).astype(np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": X, "y": np.array(labels)[:, None]})
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", lambda *a, **k: True)
    assert load_data("svhn", "train", tmp_path)[1].tolist() == [0, 1, 2]
    x, y = load_data("svhn", "train", tmp_path, svhn_extra=True)
    assert x.shape == (8, 3, 32, 32) and y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_tiny_imagenet_official_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        for k in range(2):
            Image.fromarray(RNG.randint(0, 256, (64, 64, 3)).astype(np.uint8)).save(
                (root / "train" / w / "images").mkdir(parents=True, exist_ok=True) or
                root / "train" / w / "images" / f"{w}_{k}.JPEG")
        (root / "train" / w / f"{w}_boxes.txt").write_text("not an image\n")
    lines = []
    for k, w in enumerate([wnids[1], wnids[0], wnids[1]]):
        Image.fromarray(RNG.randint(0, 256, (64, 64, 3)).astype(np.uint8)).save(root / "val" / "images" /
                                                                                f"val_{k}.JPEG")
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    x, y = load_data("tiny-imagenet", "train", tmp_path)
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0, 0, 1, 1]
    xt, yt = load_data("tiny-imagenet", "test", tmp_path)  # the labelled val split
    assert xt.shape == (3, 3, 64, 64) and yt.tolist() == [1, 0, 1]
    assert load_data("tiny-imagenet", "test", tmp_path, image_size=32)[0].shape == (3, 3, 32, 32)
    assert dataset_info("tiny-imagenet").num_classes == 200


def test_imagefolder_pixels_labels_and_cache(tmp_path, monkeypatch):
    pixels = _image_folder(tmp_path, per_class=3)
    name = f"imagefolder:{tmp_path}"
    info = dataset_info(name)
    assert (info.in_channels, info.image_size, info.num_classes) == (3, 8, 2)
    x, y = load_data(name, "train")
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    first = torch.from_numpy(pixels[tmp_path / "train" / "cat" / "0.png"]).permute(2, 0, 1)
    assert torch.equal((x[0] * 255).round().to(torch.uint8), first)
    assert (tmp_path / ".iat-cache" / "train-native.npz").is_file()

    def no_decoding(*a, **k):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(iat.data_folders, "_decode", no_decoding)
    x2, y2 = load_data(name, "train")  # from the cache
    assert torch.equal(x, x2) and torch.equal(y, y2)
    _png(tmp_path / "train" / "dog" / "9.png", RNG.randint(0, 256, (8, 8, 3)).astype(np.uint8))
    with pytest.raises(AssertionError, match="decoded although"):  # a changed folder is decoded afresh
        load_data(name, "train")
    monkeypatch.undo()
    assert load_data(name, "train")[0].shape[0] == 7
    assert load_data(name, "test", image_size=4)[0].shape == (6, 3, 4, 4)  # resized and center-cropped


def _write_npz(path, image, label):
    np.savez(path, image=image, label=label)
    return str(path)


def test_aux_batches_hold_the_fraction_and_an_epoch_is_the_real_sets_batches():
    from iat.data import DataInfo

    info = DataInfo("t", 1, 4, 10, (0.5,), (0.5,), 0, False)
    n, batch = 20, 8
    x, y = torch.zeros(n, 1, 4, 4), torch.arange(n) % 10
    aux = AuxData(torch.full((50, 4, 4, 1), 255, dtype=torch.uint8), torch.full((50,), 3), 0.7, "f", "")
    order = torch.randperm(n)
    torch.manual_seed(0)
    batches = list(aux.batches(x, y, info, order, 0, batch))
    assert len(batches) == 3  # ceil(20 / 8): DM-Improves-AT's epoch
    for k, (bx, by, share) in enumerate(batches):
        is_aux = bx.flatten(1).eq(1).all(1)
        assert len(bx) == batch and int(is_aux.sum()) == 5 and share == 1.0  # floor(8 x 0.7) auxiliary
        assert by[~is_aux].tolist() == y[order[k * 3:(k + 1) * 3]].tolist()  # real ones in the epoch's order
    torch.manual_seed(0)
    again = list(aux.batches(x, y, info, order, 1, batch))  # a resumed epoch from batch 1
    assert len(again) == 2
    ranks = []
    for r in range(2):  # torchrun: each rank seeded alike
        torch.manual_seed(0)
        ranks.append(list(aux.batches(x, y, info, order, 0, batch, shard=lambda t, r=r: t.tensor_split(2)[r])))
    for (x0, y0, share0), (x1, y1, share1), (_, yg, _) in zip(*ranks, batches):  # the global batch, in two parts
        assert len(x0) == len(x1) == 4 and share0 + share1 == 1.0
        assert sorted(torch.cat([y0, y1]).tolist()) == sorted(yg.tolist())
        assert int(x0.flatten(1).eq(1).all(1).sum()) in (2, 3)  # each rank holds its share of auxiliary examples


def test_train_with_aux_data_records_it(tmp_path, capsys):
    images = RNG.randint(0, 256, (40, 8, 8, 1)).astype(np.uint8)
    aux = _write_npz(tmp_path / "gen.npz", images, RNG.randint(0, 10, 40))
    out = tmp_path / "run"
    argv = ["train", "--method", "iat-mixup", "--dataset", "digits", "--arch", "cnn-small", "--width", "4",
            "--epochs", "1", "--batch-size", "32", "--train-size", "64", "--eps", "0.1", "--step-size", "0.05",
            "--attack-steps", "1", "--device", "cpu", "--aux-data", aux, "--aux-fraction", "0.5", "--out", str(out)]
    assert main(["-q", *argv]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["aux_data"] == aux and config["aux_fraction"] == 0.5 and "SemiSupervisedSampler" in \
        config["epoch_definition"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1


def test_the_scale_experiments_load_and_their_smoke_stand_in_fits():
    from iat.data_aux import read_npz
    from iat.reproduce.experiment import load_experiment

    c100 = load_experiment("cifar100", "paper")
    assert (c100.settings.dataset, c100.settings.arch, c100.settings.epochs, c100.settings.milestones) == \
        ("cifar100", "preactresnet18", 200, [100, 150]) and len(c100.methods) == 6
    gen = load_experiment("generated", "paper").settings
    assert (gen.aux_data, gen.aux_fraction, gen.batch_size) == ("1m.npz", 0.7, 512)
    smoke = load_experiment("generated", "smoke")
    assert smoke.methods == ["pgd", "iat-mixup"] and smoke.settings.dataset == "fashion-mnist"
    images, labels = read_npz(Path(smoke.settings.aux_data), dataset_info("fashion-mnist"))  # shipped beside it
    assert images.shape == (256, 28, 28, 1) and len(set(labels.tolist())) == 10


# ------------------------------------------------------------------------------------------ bad input

TRAIN = ["train", "--method", "erm", "--arch", "cnn-small", "--epochs", "1", "--device", "cpu"]


def refused(tmp_path, capsys, *flags: str) -> str:
    """`iat train` with `flags`: exit 2, one line on stderr, no run directory."""
    out = tmp_path / "out"
    try:
        code = main(["-q", *TRAIN, *flags, "--out", str(out)])
    except SystemExit as e:  # argparse's own checks exit from inside
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()
    return err


def test_a_folder_with_no_images(tmp_path, capsys):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    err = refused(tmp_path, capsys, "--dataset", f"imagefolder:{tmp_path}")
    assert str(tmp_path / "train") in err and "no valid file for the classes cat" in err and "fix:" in err
    (tmp_path / "train" / "cat").rmdir()
    assert "holds no class folders" in refused(tmp_path, capsys, "--dataset", f"imagefolder:{tmp_path}")


def test_mixed_image_sizes(tmp_path, capsys):
    _image_folder(tmp_path, per_class=2, size=8)
    _png(tmp_path / "train" / "dog" / "big.png", RNG.randint(0, 256, (12, 12, 3)).astype(np.uint8))
    err = refused(tmp_path, capsys, "--dataset", f"imagefolder:{tmp_path}")
    assert "big.png is 12x12 but" in err and "--image-size N" in err


def test_a_class_in_val_that_train_lacks(tmp_path, capsys):
    _image_folder(tmp_path, classes=("cat", "dog"), val_classes=("cat", "owl"), per_class=1)
    load_data(f"imagefolder:{tmp_path}", "train")  # training is fine; testing is not
    with pytest.raises(UsageError, match=r"val/owl is a class folder that .*train lacks") as e:
        load_data(f"imagefolder:{tmp_path}", "test")
    assert "\n" not in str(e.value)


def test_a_corrupt_image(tmp_path, capsys):
    _image_folder(tmp_path, per_class=2)
    bad = tmp_path / "train" / "dog" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])  # cut off
    err = refused(tmp_path, capsys, "--dataset", f"imagefolder:{tmp_path}")
    assert f"{bad} is not a readable image" in err and "replace or delete it" in err


@pytest.mark.parametrize("image,label,match", [
    (np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, int), "image is float32, not uint8"),
    (np.zeros((4, 1, 8, 8), np.uint8), np.zeros(4, int), r"image has shape \(4, 1, 8, 8\); digits needs N x 8 x 8"),
    (np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 1, 10, 2]), r"label 10 \(example 2\) is outside the 10 classes"),
    (np.zeros((4, 8, 8, 1), np.uint8), np.zeros(3, int), "one integer class per image"),
])
def test_a_bad_npz(tmp_path, capsys, image, label, match):
    path = _write_npz(tmp_path / "gen.npz", image, label)
    err = refused(tmp_path, capsys, "--dataset", "digits", "--aux-data", path)
    assert path in err and "np.savez" in err
    assert __import__("re").search(match, err), err


@pytest.mark.parametrize("fraction", ["1", "1.5", "-0.1"])
def test_aux_fraction_outside_0_1(tmp_path, capsys, fraction):
    path = _write_npz(tmp_path / "gen.npz", np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, int))
    err = refused(tmp_path, capsys, "--dataset", "digits", "--aux-data", path, f"--aux-fraction={fraction}")
    assert "--aux-fraction" in err and ("[0, 1)" in err or "at least 0" in err)


def test_options_for_other_data_are_refused(tmp_path, capsys):
    assert "drop --image-size" in refused(tmp_path, capsys, "--dataset", "digits", "--image-size", "32")
    assert "drop --svhn-extra" in refused(tmp_path, capsys, "--dataset", "digits", "--svhn-extra")
    assert "only with --aux-data" in refused(tmp_path, capsys, "--dataset", "digits", "--aux-fraction", "0.5")
