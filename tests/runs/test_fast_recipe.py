"""fast-cifar and the fast recipe: the network, the recipe's defaults and hooks, and a tiny real run through the CLI."""
import itertools
import json
import pickle

import pytest
import torch

from cnnlab.callbacks import LambdaCallback
from cnnlab.cli import main
from cnnlab.data.loader import TensorLoader, plan_epoch
from cnnlab.engine import fit
from cnnlab.engine.evaluate import tta_views
from cnnlab.engine.optim import Muon, lr_factor, orthogonalize
from cnnlab.runs.budget import Costs, full_size_epochs, plan_epochs
from cnnlab.errors import CnnlabError
from cnnlab.runs.config import RunConfig
from cnnlab.runs.run import identity_check
from cnnlab.runs.recipes import FAST_BATCH, fast_optimizer
from cnnlab.models import create_model
from cnnlab.models.fast import patch_whitening


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_fast_cifar_builds_and_its_stem_whitens_the_training_patches():
    model = create_model("fast-cifar")
    images = _images()
    model.init_from_data(images)
    x = images.float() / 255
    assert model(x).shape == (64, 10)
    z = model.stem((x - model.mean) / model.std)[:, :12] - model.stem.bias[:12, None, None]  # the 12 positive filters
    flat = z.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = flat.T @ flat / len(flat)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=0.05)
    assert not model.stem.weight.requires_grad and all(not m.weight.requires_grad for m in model.modules()
                                                       if isinstance(m, torch.nn.BatchNorm2d))


def test_patch_whitening_gives_filters_and_their_negatives():
    f = patch_whitening(torch.randn(20, 3, 8, 8), 2)
    assert f.shape == (24, 3, 2, 2) and torch.equal(f[12:], -f[:12])


def test_recipe_fills_only_the_fields_the_user_did_not_set():
    cfg = RunConfig(model="fast-cifar", epochs=3, precision="fp32")
    assert cfg.recipe == "fast" and cfg.epochs == 3 and cfg.precision == "fp32"
    assert (cfg.batch_size, cfg.optimizer, cfg.label_smoothing, cfg.tta, cfg.channels_last, cfg.val_every) == (
        FAST_BATCH, "muon", 0.2, "flip-shift-adaptive", True, 0)  # validated after the last epoch only
    plain = RunConfig(model="baseline-cifar", epochs=3)
    assert plain.recipe is None and (plain.batch_size, plain.optimizer, plain.precision) == (32, "adam", "fp32")


def test_muon_keeps_filter_norms_and_sgd_groups_follow_their_roles():
    model = create_model("fast-cifar")
    cfg = RunConfig(model="fast-cifar")
    opt = fast_optimizer(model, cfg.fit_config())
    assert isinstance(opt, Muon)
    muon, *sgd = opt.param_groups
    assert muon["orthogonalize"] and all(p.dim() == 4 for p in muon["params"])
    stem = next(g for g in sgd if any(p is model.stem.bias for p in g["params"]))
    assert stem["horizon"] == pytest.approx(3 / 8)
    for g in opt.param_groups:
        g["lr"] = cfg.base_lr * g["lr_scale"]
    x, y = _images(8).float() / 255, torch.arange(8) % 10
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    w = muon["params"][1]
    assert w.norm().item() == pytest.approx(len(w) ** 0.5, rel=0.05)


def test_orthogonalize_flattens_the_singular_values():
    s = torch.linalg.svdvals(orthogonalize(torch.randn(64, 300)).float())
    assert 0.5 < s.min() and s.max() < 1.5


def test_alternating_flips_mirror_each_image_in_every_other_epoch():
    plans = [plan_epoch(100, 7, e, True, 2, alternate_flips=True) for e in range(3)]
    per_image = [torch.empty(100, dtype=torch.bool).index_put_((p.order,), p.flip) for p in plans]
    assert torch.equal(per_image[0], ~per_image[1]) and torch.equal(per_image[0], per_image[2])


def test_tta_views_weigh_to_one_and_start_with_the_batch():
    x = torch.rand(2, 3, 8, 8)
    views = tta_views(x, "flip-shift")
    assert len(views) == 6 and views[0][1] is x and sum(w for w, _ in views) == pytest.approx(1.0)


def test_stem_bias_stops_taking_gradients_after_its_horizon_and_gets_them_back_after_fit(tmp_path):
    model = create_model("fast-cifar")
    images, labels = _images(32), torch.arange(32) % 10
    model.init_from_data(images)
    cfg = RunConfig(model="fast-cifar", epochs=8, batch_size=8, precision="fp32", channels_last=False,
                    tta="none").fit_config()
    seen = []
    steps = itertools.count(1)
    record = lambda _batch, _logs: seen.append((next(steps), model.stem.bias.requires_grad,
                                                model.stem.bias.detach().clone()))
    fit(model, TensorLoader(images, labels, 8), None, cfg, tmp_path / "run", progress=False,
        optimizer_factory=fast_optimizer, callbacks=[LambdaCallback(on_train_batch_end=record)])
    horizon = round(3 / 8 * 32)  # steps: 8 epochs × 4; the callback counts completed steps
    assert [grad for _, grad, _ in seen] == [s <= horizon for s, _, _ in seen]
    assert all(torch.equal(bias, seen[-1][2]) for s, _, bias in seen if s >= horizon)  # no update after it
    assert not torch.equal(seen[0][2], seen[-1][2]) and model.stem.bias.requires_grad


def test_linear_schedule_and_horizon_end_at_zero():
    assert lr_factor(0, 10, "linear") == 1.0 and lr_factor(10, 10, "linear") == 0.0


def test_budget_plan_is_shorter_for_a_shorter_budget():
    costs = Costs(train_step=2.0, eval_image=1e-4)
    long, short = (plan_epochs(b, 10.0, costs, 20, 10_000, 1, 6) for b in (780, 300))
    assert long > short >= 1
    assert plan_epochs(10, 10.0, costs, 20, 10_000, 1, 6) == 1  # never less than one epoch
    cheaper_late = Costs(train_step=2.0, eval_image=1e-4, late_step=1.0, late_from=0.25)
    assert cheaper_late.mean_step == pytest.approx(1.25)
    assert plan_epochs(780, 10.0, cheaper_late, 20, 10_000, 1, 6) > long


def test_budget_plan_without_validations_before_the_last_fits_more_epochs():
    costs = Costs(train_step=2.0, eval_image=1e-3)  # 10 s per validation of 10,000 images, 40 s per epoch
    every, end_only = (plan_epochs(780, 10.0, costs, 20, 10_000, v, 6) for v in (1, 0))
    assert end_only > every
    assert end_only * 40.0 + 6 * 10.0 <= 0.97 * 780 - 10.0 < (end_only + 1) * 40.0 + 6 * 10.0  # 6 final views


def _write_cifar10(folder, train_per_batch=52, test=64):
    """A tiny CIFAR-10 folder in the official python layout."""
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(1)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test if name == "test_batch" else train_per_batch
        data = torch.randint(0, 256, (n, 3072), generator=g, dtype=torch.uint8).numpy()
        batch = {b"data": data, b"labels": [i % 10 for i in range(n)], b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": train_per_batch}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def test_tiny_fast_run_through_the_cli_writes_history_checkpoints_and_resumes(tmp_path):
    data = _write_cifar10(tmp_path / "cifar-10-batches-py")
    run = tmp_path / "run"
    args = ["train", "fast-cifar", "--dataset", "cifar10", "--data-dir", str(data), "--run-dir", str(run),
            "--no-progress", "--batch-size", "128", "--eval-batch-size", "64", "--time-budget", "0.05"]
    assert main(args) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recipe"] == "fast" and cfg["optimizer"] == "muon" and cfg["time_budget"] == 0.05 and cfg["epochs"] >= 1
    history = json.loads((run / "history.json").read_text())
    assert len(history["epoch"]) == cfg["epochs"] and 0 <= history["tta_val_accuracy"][-1] <= 1
    assert history["val_accuracy"][-1] is not None and (run / "last.pt").exists() and (run / "best.pt").exists()
    assert main(args) == 0  # resuming the finished run keeps its epoch count and trains nothing more
    assert json.loads((run / "history.json").read_text())["epoch"] == history["epoch"]


def test_budget_plan_counts_progressive_resizing_as_cheaper_epochs():
    costs = Costs(train_step=2.0, eval_image=1e-4)
    plain = plan_epochs(780, 10.0, costs, 20, 10_000, 1, 6)
    progressive = plan_epochs(780, 10.0, costs, 20, 10_000, 1, 6, full=32, smallest=16)
    assert progressive > plain
    assert full_size_epochs(8, 32, 16) == pytest.approx(sum((s / 32) ** 2 for s in (16, 20, 22, 26, 28, 32, 32, 32)))
    def total(epochs):  # validations of 1 s each, the last one replaced by the final evaluation's 6 views
        return epochs * 1.0 + 20 * 2.0 * full_size_epochs(epochs, 32, 16) + 6 * 1.0 - 1.0

    assert total(progressive) <= 0.97 * 780 - 10.0 < total(progressive + 1)  # the most epochs that fit


def test_progressive_resize_trains_fast_cifar_and_refuses_a_flattening_head(tmp_path, capsys):
    data = _write_cifar10(tmp_path / "cifar-10-batches-py")
    base = ["train", "--dataset", "cifar10", "--data-dir", str(data), "--no-progress", "--epochs", "2",
            "--progressive-resize", "16"]
    assert main([*base[:1], "lenet5-cifar", *base[1:], "--run-dir", str(tmp_path / "l")]) == 2
    err = capsys.readouterr().err
    assert "lenet5-cifar cannot train on 16x16 images" in err and "pools globally" in err and "Traceback" not in err
    assert main([*base[:1], "fast-cifar", *base[1:], "--run-dir", str(tmp_path / "f"), "--batch-size", "128",
                 "--limit-train", "256"]) == 0
    history = json.loads((tmp_path / "f" / "history.json").read_text())
    assert len(history["epoch"]) == 2 and history["tta_val_accuracy"][-1] is not None


def test_a_run_saved_before_progressive_resizing_existed_resumes_only_as_it_trained(tmp_path):
    old = RunConfig(model="fast-cifar", dataset="cifar10", progressive_resize=0).to_dict()
    del old["progressive_resize"]  # config.json of a run saved before the option (and the recipe's 16) existed
    assert RunConfig(model="fast-cifar").progressive_resize == 16 and RunConfig.from_dict(old).progressive_resize == 0
    with pytest.raises(CnnlabError, match="different progressive_resize"):
        identity_check(RunConfig(model="fast-cifar", dataset="cifar10"), tmp_path)({"config": old})
    identity_check(RunConfig(model="fast-cifar", dataset="cifar10", progressive_resize=0), tmp_path)({"config": old})
