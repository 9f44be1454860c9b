"""Text runs on the same engine: train, resume, eval, predict, n-grams, ONNX, folds and cross-validation, vectors."""
import json

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.runs.card import RunCard
from cnnlab.runs.config import RunConfig
from cnnlab.runs.predict import sentence_ids, torch_predictor
from cnnlab.runs.run import eval_split, load_splits, load_trained
from conftest import TINY_KIM, write_word2vec_binary


def test_a_text_run_keeps_its_vocabulary_and_learns(text_run, text_root, capsys):
    ckpt = load_checkpoint(text_run / "best.pt")
    card = RunCard.from_checkpoint(ckpt, "best.pt")
    assert card.text.tokenizer == "sst" and card.text.vocabulary[:2] == ("<pad>", "<unk>") and "great" in card.text.vocabulary
    assert card.input_shape == card.input_size and card.classes == ("negative", "positive")
    cfg = RunConfig.from_dict(ckpt["config"])
    assert (cfg.optimizer, cfg.momentum, cfg.val, cfg.recipe) == ("adadelta", 0.95, "dev", "kim-2014")
    history = json.loads((text_run / "history.json").read_text())
    assert len(history["epoch"]) == 10 and max(history["val_accuracy"]) >= 0.8
    assert main(["eval", str(text_run), "--split", "dev", "--confusion", str(text_run / "cm.png")]) == 0
    out = capsys.readouterr().out
    assert "on dev (120 sentences)" in out and "negative" in out and (text_run / "cm.png").is_file()


def test_eval_defaults_to_the_validation_sentences_without_a_test_split(text_run, capsys):
    """This SST-2 has no test file (it is never downloaded), so eval scores what the run validated on: its dev split;
    the result, its notebook view and the CLI line count sentences."""
    result = cnnlab.evaluate(text_run)
    assert (result.split, result.count, result.unit) == ("val", 120, "sentences")
    assert result.labels.shape == result.predicted.shape == (120,)
    assert "(120 sentences)" in result._repr_html_()
    assert main(["eval", str(text_run)]) == 0 and "on val (120 sentences)" in capsys.readouterr().out


def test_the_explainer_page_refuses_a_text_run_in_one_line(text_run, capsys):
    assert main(["explainer", str(text_run)]) == 2
    err = capsys.readouterr().err
    assert "is a text model: the explainer pictures image networks" in err and "cnnlab ngrams" in err


def test_show_refuses_a_sentence_set_in_one_line(text_root, tmp_path, capsys):
    (tmp_path / "s.txt").write_text("1 good film\n0 bad film\n")
    for dataset in ("mr", str(tmp_path / "s.txt")):
        assert main(["show", dataset, "--data-dir", str(text_root), "--out", str(tmp_path / "x.png")]) == 2
        assert f"{dataset} holds sentences and show draws images" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_predict_sentences_from_arguments_and_a_file(text_run, tmp_path, capsys):
    (tmp_path / "s.txt").write_text("a great and superb story .\n\n")
    assert main(["predict", str(text_run), "the plot is dull and boring .", "--file", str(tmp_path / "s.txt"),
                 "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f'"the plot is dull and boring ."  negative {lines[0].split()[-1]}',
                     f'"a great and superb story ."  positive {lines[1].split()[-1]}']
    result = cnnlab.predict(text_run, ["great fun"], top_k=2)
    assert [c for c, _ in result.predictions[0].top] == ["positive", "negative"]


def test_ngrams_name_the_sentiment_words(text_run, capsys):
    found = cnnlab.ngrams(text_run, top=3, filters=4)
    assert len(found) == 4 and all(f.favours in ("negative", "positive") and f.top for f in found)
    assert found[0].weight >= found[-1].weight
    words = {w for f in found for gram, _ in f.top for w in gram.split()}
    assert words & {"good", "great", "fun", "moving", "witty", "superb", "bad", "dull", "boring", "awful", "tedious"}
    assert main(["ngrams", str(text_run), "--top", "2", "--filters", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_onnx_export_takes_any_sentence_length(text_run, tmp_path, capsys):
    out = tmp_path / "kim.onnx"
    assert main(["export", str(text_run), "--onnx", "--out", str(out)]) == 0
    assert "agrees with PyTorch" in capsys.readouterr().out
    from cnnlab.runs.predict import onnx_predictor

    onnx_logits, card = onnx_predictor(out)
    torch_logits, _ = torch_predictor(text_run)
    x = sentence_ids(["a dull film", "great fun , really witty and moving ."], card)
    assert (onnx_logits(x) - torch_logits(x)).abs().max() < 1e-4
    assert main(["predict", "--onnx", str(out), "great fun"]) == 0
    assert capsys.readouterr().out.startswith('"great fun"  positive')


def test_resume_continues_a_text_run_exactly(text_root, tmp_path):
    args = ["train", "dcnn", "--dataset", "trec", "--data-dir", str(text_root), "--batch-size", "8", "--val", "0.25",
            "--model-option", "embedding_dim=8", "--model-option", "maps=(2,3)", "--no-progress"]
    assert main([*args, "--epochs", "2", "--run-dir", str(tmp_path / "once")]) == 0
    assert main([*args, "--epochs", "1", "--run-dir", str(tmp_path / "twice")]) == 0
    assert main([*args, "--epochs", "2", "--run-dir", str(tmp_path / "twice")]) == 0
    once, twice = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("once", "twice"))
    assert all(torch.equal(once[k], twice[k]) for k in once)


def test_folds_cut_the_train_split_and_cv_scores_each_fold(text_root, tmp_path, capsys):
    cfg = RunConfig(model="kim-cnn", dataset="mr", data_dir=str(text_root), fold=2, folds=4, limit_val=None)
    splits = load_splits(cfg)
    assert len(splits.val) + len(splits.train) == 180 and cfg.val == "dev"  # 240 sentences − fold 2 (60)
    assert len(eval_split(cfg, "test")) == 60 and len(splits.val) == 18  # Kim's dev: 10% of the other folds
    args = ["cv", "kim-cnn", "--dataset", "mr", "--data-dir", str(text_root), "--folds", "4", "--only", "1,3",
            "--epochs", "2", "--batch-size", "10", *TINY_KIM, "--run-dir", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fold  1:" in out and "fold  3:" in out and "(2 of 4 folds)" in out
    summary = json.loads((tmp_path / "kim-cnn-mr-cv.json").read_text())
    assert [r["fold"] for r in summary["results"]] == [1, 3] and all(r["count"] == 60 for r in summary["results"])
    assert summary["mean_accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in summary["results"]]))
    assert main(args) == 0 and "Resuming" not in capsys.readouterr().err  # finished folds are reused as they are
    assert main([*args[:9], "4", *args[10:]]) == 0  # a later --only adds to the folds finished before
    assert "(3 of 4 folds)" in capsys.readouterr().out
    assert [r["fold"] for r in json.loads((tmp_path / "kim-cnn-mr-cv.json").read_text())["results"]] == [1, 3, 4]
    assert main(["eval", str(tmp_path / "kim-cnn-mr-fold3"), "--split", "test"]) == 0
    assert "on test (60 sentences)" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "kim-cnn-mr-fold3")]) == 0  # a --fold run's default split is its test fold
    assert "on test (60 sentences)" in capsys.readouterr().out


def test_static_variant_starts_from_the_word_vectors(text_root, tmp_path, capsys):
    vectors = write_word2vec_binary(tmp_path / "v.bin", {"great": [0.5] * 16, "dull": [-0.5] * 16})
    base = ["train", "kim-cnn", "--dataset", "sst2", "--data-dir", str(text_root), "--epochs", "1", *TINY_KIM,
            "--no-progress"]
    assert main([*base, "--model-option", "variant=static", "--word-vectors", str(vectors),
                 "--run-dir", str(tmp_path / "static")]) == 0
    assert "Word vectors: 2 of" in capsys.readouterr().err
    trained = load_trained(tmp_path / "static")
    row = trained.card.text.vocabulary.index("great")
    assert trained.model.embed.weight[row].eq(0.5).all()  # frozen: still the file's vector after training
    assert main([*base, "--model-option", "variant=static", "--run-dir", str(tmp_path / "x")]) == 2
    assert "variant static starts from pretrained vectors: pass --word-vectors PATH" in capsys.readouterr().err
    assert main([*base, "--model-option", "variant=static", "--word-vectors", str(tmp_path / "absent.bin"),
                 "--run-dir", str(tmp_path / "y")]) == 2
    assert "absent.bin is missing" in capsys.readouterr().err


def test_text_and_image_mismatches_are_one_line(text_root, tmp_path, capsys):
    cases = [(["train", "kim-cnn", "--dataset", "digits"], "kim-cnn classifies sentences: --dataset mr, sst2, trec"),
             (["train", "baseline-cifar", "--dataset", str(text_root / "sst2" / "stsa.binary.dev")],
              "holds sentences but baseline-cifar classifies images"),
             (["train", "kim-cnn", "--dataset", "sst2", "--data-dir", str(text_root), "--augment", "flip"],
              "the image options"),
             (["train", "baseline-cifar", "--word-vectors", "v.bin"], "--word-vectors fills a text network's"),
             (["summary", "kim-cnn", "--input", "3x32x32"], "give --input as a sentence length L"),
             (["train", "kim-cnn", "--fold", "11"], "--fold 11 is beyond --folds 10")]
    for args, message in cases:
        assert main([*args, "--run-dir", str(tmp_path / "r")] if args[0] == "train" else args) == 2, args
        assert message in capsys.readouterr().err


def test_compare_trains_both_sentence_networks_alike(text_root, tmp_path, capsys):
    args = ["compare", "kim-cnn", "dcnn", "--dataset", "sst2", "--data-dir", str(text_root), "--epochs", "1",
            "--model-option", "embedding_dim=16", "--run-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
            "--no-progress"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "kim-cnn" in table and "dcnn" in table and (tmp_path / "rep" / "report.html").is_file()
