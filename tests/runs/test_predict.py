"""Prediction from image files, the data options (--rgb, --resize, folders, --label-mode), eval and visualize."""
import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.runs import run as run_module
from cnnlab.runs.config import RunConfig
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.runs.card import RunCard
from cnnlab.runs.predict import image_files, predict_files, top_k, torch_predictor
from cnnlab.errors import CnnlabError


def write_digits(folder, count=3, start=0):
    """The first test digits as grayscale PNGs named <index>_<label>.png; returns the paths."""
    data = load_dataset("digits", "test")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"{i}_{data.classes[data.labels[i]]}.png"
        Image.fromarray(data.images[i, 0].numpy()).save(path)
        paths.append(path)
    return paths


def predicted_lines(capsys):
    out, err = capsys.readouterr()
    return [line.split() for line in out.splitlines()], err


def test_predict_folder_top_k_matches_model_and_skips_bad_files(digits_run, tmp_path, capsys):
    folder = tmp_path / "images"
    paths = write_digits(folder)
    Image.new("RGB", (50, 40), (200, 30, 30)).save(folder / "colour.jpg")  # other mode and size: converted
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not an image extension: never read")
    assert main(["predict", str(digits_run), str(folder), str(tmp_path / "missing.png"), "--top-k", "3"]) == 0
    rows, err = predicted_lines(capsys)
    assert len(rows) == 4 and all(len(r) == 1 + 2 * 3 for r in rows)
    assert "broken.png" in err and "missing.png" in err and "notes.txt" not in err
    probs = [[float(p) for p in r[2::2]] for r in rows]
    assert all(p == sorted(p, reverse=True) and 0 < sum(p) <= 1.0001 for p in probs)
    trained = run_module.load_trained(digits_run)
    data = load_dataset("digits", "test")
    with torch.no_grad():
        expected = torch.softmax(trained.model(data.images[:3].float() / 255), 1)
    by_name = {r[0]: r for r in rows}
    for i, path in enumerate(paths):
        row = by_name[str(path)]
        assert row[1] == trained.card.classes[int(expected[i].argmax())]
        assert float(row[2]) == pytest.approx(float(expected[i].max()), abs=1e-3)


def test_predict_with_nothing_readable_is_one_error_line(digits_run, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    assert main(["predict", str(digits_run), str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cnnlab: error: none of the 1 input(s)") and "bad.png" in err[-1]
    assert main(["predict", str(digits_run)]) == 2
    assert "no images given" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "bad.png"), str(tmp_path / "bad.png")]) == 2
    assert "is an image: give the run directory or checkpoint first" in capsys.readouterr().err


def test_top_k_is_softmax_sorted_and_capped():
    logits = torch.tensor([[0.0, 2.0, 1.0]])
    (top,) = top_k(logits, ["a", "b", "c"], 5)
    assert [name for name, _ in top] == ["b", "c", "a"]
    assert [p for _, p in top] == pytest.approx(torch.softmax(logits, 1)[0, [1, 2, 0]].tolist())


def test_image_files_expands_folders_and_skips_hidden(tmp_path):
    write_digits(tmp_path / "a" / "b", 1)
    write_digits(tmp_path / ".hidden", 1)
    (tmp_path / "a" / "x.txt").write_text("")
    assert image_files([tmp_path]) == [tmp_path / "a" / "b" / "0_5.png"]


def test_rgb_resize_are_stored_and_reapplied_by_eval_and_predict(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "baseline-cifar", "--rgb", "--resize", "24", "--epochs", "1", "--limit-train", "64",
                 "--limit-val", "32", "--run-dir", str(run), "--no-progress"]) == 0
    card = load_checkpoint(run / "last.pt")["card"]
    assert (card["in_channels"], card["input_size"]) == (3, [24, 24])
    assert card["preprocess"] == {"rgb": True, "resize": 24, "label_mode": "fine"}
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert "on test (360 images)" in capsys.readouterr().out
    predictor, card = torch_predictor(run)
    predictions, skipped = predict_files(predictor, card, write_digits(tmp_path / "img", 2), k=1)
    assert (card.input_shape, card.classes) == ((3, 24, 24), tuple(str(d) for d in range(10)))
    assert len(predictions) == 2 and not skipped and isinstance(card, RunCard)


def write_class_folder(root, classes=("cat", "dog"), per_class=6):
    """A tiny image folder: one bright square position per class, varying sizes."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (20 + i, 24, 3), dtype=np.uint8)
            img[c * 8:(c + 1) * 8] = 230
            Image.fromarray(img).save(root / name / f"{i}.png")


def test_image_folder_trains_with_val_fraction(tmp_path, capsys):
    folder = tmp_path / "pets"
    write_class_folder(folder)
    run = tmp_path / "run"
    assert main(["train", "baseline-cifar", "--dataset", str(folder), "--val", "0.25", "--resize", "16",
                 "--epochs", "1", "--run-dir", str(run), "--no-progress"]) == 0
    card = load_checkpoint(run / "best.pt")["card"]
    assert card["classes"] == ["cat", "dog"] and card["input_size"] == [16, 16] and card["in_channels"] == 3
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "val"]) == 0
    assert "on val (3 images)" in capsys.readouterr().out
    assert main(["eval", str(run)]) == 0  # an image folder has no test split: its own validation images
    assert "on val (3 images)" in capsys.readouterr().out
    assert main(["eval", str(run), "--split", "test"]) == 2
    assert "--split val" in capsys.readouterr().err
    assert main(["train", "baseline-cifar", "--dataset", str(folder), "--run-dir", str(tmp_path / "r2")]) == 2
    assert "--val 0.2" in capsys.readouterr().err


def test_label_mode_reaches_the_cifar100_loader(monkeypatch):
    seen = {}

    def fake_load(name, split, root=None, **opts):
        seen.update(name=name, split=split, **opts)
        return load_dataset("digits", split)

    monkeypatch.setattr(run_module, "load_dataset", fake_load)
    run_module.load_split(RunConfig(dataset="cifar100", label_mode="coarse"), "train")
    assert seen == {"name": "cifar100", "split": "train", "label_mode": "coarse"}
    with pytest.raises(CnnlabError, match="--label-mode must be one of fine, coarse"):
        RunConfig(label_mode="medium")


def test_eval_confusion_matrix_and_per_class_accuracy(digits_run, tmp_path, capsys):
    png = tmp_path / "cm.png"
    assert main(["eval", str(digits_run), "--confusion", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert " on test (360 images): loss " in out[0]
    per_class = [line.split() for line in out[1:11]]
    assert [r[0] for r in per_class] == [str(d) for d in range(10)] and all(0 <= float(r[1]) <= 1 for r in per_class)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"confusion matrix → {png}" in out[-1]


def test_visualize_writes_filters_and_block_maps(digits_run, tmp_path, capsys):
    (image,) = write_digits(tmp_path, 1)
    out = tmp_path / "vis"
    assert main(["visualize", str(digits_run), str(image), "--out", str(out), "--max-maps", "4"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "filters.png" in names and any(n.startswith("01_") for n in names)
    assert main(["visualize", str(digits_run), str(tmp_path / "none.png")]) == 2
