"""RunCard: the typed model description in checkpoints and exports; old checkpoints still load."""
import pytest
import torch

from cnnlab.cli import main
from cnnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.errors import CnnlabError
from cnnlab.runs.card import Preprocess, RunCard
from cnnlab.runs.run import load_trained


def test_card_round_trips_through_plain_data():
    card = RunCard("baseline-cifar", 2, 3, (32, 32), ("cat", "dog"), "folder:x", {"init": "torch"},
                   preprocess=Preprocess(rgb=True, resize=32))
    assert RunCard.from_dict(card.to_dict()) == card
    assert card.input_shape == (3, 32, 32) and card.to_dict()["input_size"] == [32, 32]


def old_format(ckpt: dict) -> dict:
    """A checkpoint as cnnlab wrote it before the run card: the description's keys at the top level."""
    old = {k: v for k, v in ckpt.items() if k not in ("format", "card")}
    return {**old, **ckpt["card"]}


def test_a_checkpoint_from_before_the_card_still_loads_and_predicts_the_same(digits_run, tmp_path, capsys):
    ckpt = load_checkpoint(digits_run / "best.pt")
    save_checkpoint(tmp_path / "old.pt", old_format(ckpt))
    new, old = load_trained(digits_run), load_trained(tmp_path / "old.pt")
    assert old.card == new.card
    x = torch.rand(4, *new.card.input_shape)
    with torch.no_grad():
        assert torch.equal(new.model(x), old.model(x))
    assert main(["eval", str(tmp_path / "old.pt")]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("field,value,words", [
    ("input_size", [32], "input_size must be two positive whole numbers"),
    ("input_size", "32x32", "input_size must be two positive whole numbers"),
    ("model_kwargs", [1, 2], "model_kwargs must be a dict"),
    ("classes", "abc", "classes must be a list of class names"),
    ("num_classes", 0, "num_classes must be at least 1"),
    ("model_name", None, "model_name must be a str"),
])
def test_an_ill_typed_card_field_is_one_line_naming_it(digits_run, tmp_path, field, value, words, capsys):
    ckpt = load_checkpoint(digits_run / "best.pt")
    bad = {**{k: v for k, v in ckpt.items() if k != "format"}, "card": {**ckpt["card"], field: value}}
    save_checkpoint(tmp_path / "bad.pt", bad)
    with pytest.raises(CnnlabError, match=words):
        load_trained(tmp_path / "bad.pt")
    assert main(["eval", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "bad.pt" in err[0]


def test_a_missing_card_field_is_named(digits_run, tmp_path):
    ckpt = load_checkpoint(digits_run / "best.pt")
    card = {k: v for k, v in ckpt["card"].items() if k != "classes"}
    save_checkpoint(tmp_path / "bad.pt", {**{k: v for k, v in ckpt.items() if k != "format"}, "card": card})
    with pytest.raises(CnnlabError, match="classes is missing"):
        load_trained(tmp_path / "bad.pt")
