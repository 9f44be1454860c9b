"""One path: the CLI and the Python API are the same program.

``cnnlab train MODEL --opt …`` and ``cnnlab.train(MODEL, opt=…)`` must write identical config.json
files for every registered model, recipes included, and a RunConfig can never skip its model's recipe.
"""
from __future__ import annotations

import json

import pytest

import cnnlab
from cnnlab import api
from cnnlab.cli import build_parser, main
from cnnlab.errors import CnnlabError
from cnnlab.models import list_models
from cnnlab.runs import run as run_module
from cnnlab.runs.config import RunConfig, cli_options, flag
from cnnlab.runs.recipes import RECIPES

CLI_ARGS = ["--dataset", "cifar10", "--epochs", "2", "--seed", "3", "--channels-last", "--val", "0.1",
            "--limit-train", "100"]
PY_KWARGS = dict(dataset="cifar10", epochs=2, seed=3, channels_last=True, val="0.1", limit_train=100)


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Replace the run itself by writing config.json where it would go: what each path asked for, nothing trained."""
    written = []

    def fake_train_run(cfg, run_dir=None, fresh=False, progress=True, callbacks=None):
        path = tmp_path / f"{len(written)}.json"
        cfg.save(path)
        written.append(path.read_bytes())
        history = cnnlab.History()
        history.run_dir = run_dir
        return history

    monkeypatch.setattr(run_module, "train_run", fake_train_run)
    return written


@pytest.mark.parametrize("model", list_models())
def test_cli_and_python_write_the_same_config_for_every_model(model, captured, capsys):
    assert main(["train", model, *CLI_ARGS, "--no-progress"]) == 0
    cnnlab.train(model, progress=False, **PY_KWARGS)
    cli_json, py_json = captured
    assert cli_json == py_json
    recipe = cnnlab.model_info(model).recipe
    assert RunConfig.from_dict(json.loads(py_json)).recipe == recipe  # the recipe was applied on both paths


@pytest.mark.parametrize("model", [m for m in list_models() if cnnlab.model_info(m).recipe])
def test_a_runconfig_takes_its_models_recipe_on_construction(model):
    cfg = RunConfig(model=model)
    for name, value in RECIPES[cfg.recipe].defaults.items():
        assert getattr(cfg, name) == value, name
    assert RunConfig(model=model, epochs=1).epochs == 1  # what the user sets wins


def test_real_runs_from_both_paths_write_identical_config_json(tmp_path, capsys):
    quick = dict(epochs=1, limit_train=64, limit_val=32)
    for model in ("baseline-cifar", "fast-cifar"):
        assert main(["train", model, "--epochs", "1", "--limit-train", "64", "--limit-val", "32", "--no-progress",
                     "--run-dir", str(tmp_path / f"cli-{model}")]) == 0
        history = cnnlab.train(model, run_dir=tmp_path / f"py-{model}", progress=False, **quick)
        assert history.run_dir == tmp_path / f"py-{model}" and len(history) == 1
        cli, py = ((tmp_path / f"{side}-{model}" / "config.json").read_bytes() for side in ("cli", "py"))
        assert cli == py


def test_every_runconfig_option_is_a_cli_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    for name, opt in cli_options():
        assert flag(name) in text, name
        if opt.choices:
            assert "{" + ",".join(opt.choices) + "}" in text, name


def test_unknown_python_option_is_one_line_naming_the_options():
    with pytest.raises(CnnlabError, match="unknown training option.*bacth_size.*batch_size"):
        cnnlab.train("baseline-cifar", bacth_size=8)


def test_compare_checks_every_name_before_training(capsys):
    assert main(["compare", "baseline-cifar", "restnet18-cifar", "--epochs", "1"]) == 2
    assert "unknown model 'restnet18-cifar'" in capsys.readouterr().err


def test_public_functions_are_lazy_attributes():
    for name in ("train", "evaluate", "predict", "summary", "export", "plot", "show", "compare", "visualize", "explainer",
                 "import_keras", "create_model", "tune_cpu", "RunConfig"):
        assert callable(getattr(cnnlab, name)), name
    with pytest.raises(AttributeError):
        cnnlab.no_such_thing  # noqa: B018


def test_summary_and_export_from_python(digits_run, tmp_path):
    table = api.summary("lenet5-cifar")
    assert table.total_params == 62_006
    exported = cnnlab.export(digits_run, format="txt", out=tmp_path / "w.txt")
    assert exported.path.read_text().startswith("stage1.c1.weight")
    with pytest.raises(CnnlabError, match="unknown export format"):
        cnnlab.export(digits_run, format="pickle")


def test_show_returns_a_figure_of_labelled_samples_and_saves_when_asked(tmp_path):
    from cnnlab.data import load_dataset

    shown = cnnlab.show("digits", n=5, split="test")
    test = load_dataset("digits", "test")
    assert shown.path is None
    assert [ax.get_title() for ax in shown.figure.axes] == [test.classes[int(y)] for y in test.labels[:5]]
    saved = cnnlab.show("digits", n=3, out=tmp_path / "d.png")
    assert saved.path == tmp_path / "d.png" and saved.path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(CnnlabError, match="n must be between 1 and 256"):
        cnnlab.show("digits", n=0)


def test_cli_show_writes_a_png_named_after_the_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "digits", "-n", "4", "--split", "test"]) == 0
    assert capsys.readouterr().out.strip() == "test images of digits → digits-test.png"
    assert (tmp_path / "digits-test.png").stat().st_size > 1000
    assert main(["show", "digits", "--split", "val"]) == 2
    assert "unknown split 'val' for digits" in capsys.readouterr().err


def test_plot_returns_the_figure_and_the_path(digits_run, tmp_path):
    plot = cnnlab.plot(digits_run, out=tmp_path / "c.png")
    assert plot.path == tmp_path / "c.png" and plot.path.is_file()
    assert [ax.get_title() for ax in plot.figure.axes] == ["Training and Validation Accuracy",
                                                          "Training and Validation Loss"]
    assert plot._repr_png_()[:4] == b"\x89PNG"


def test_compare_refuses_unknown_curves_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "baseline-cifar", "--curves", "loss", "--epochs", "1"]) == 2
    assert "unknown curves 'loss': choose one of accuracy-loss, error" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("recipe", [[None], 3, {"name": "fast"}])
def test_a_config_json_whose_recipe_is_not_a_name_is_one_line_naming_the_file(tmp_path, recipe):
    """A fuzzed config.json with "recipe": [null] once escaped as TypeError from the recipe lookup."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**RunConfig().to_dict(), "recipe": recipe}))
    with pytest.raises(CnnlabError, match=r"config.json is damaged: --recipe must be a recipe's name"):
        RunConfig.load(path)
