"""The training loss: GoogLeNet's two aux losses weighted 0.3, main logits in eval; Keras' kernel L2 penalty."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.cli import main
from cnnlab.data.loader import TensorLoader
from cnnlab.engine import FitConfig, Trainer
from cnnlab.engine.evaluate import evaluate_metrics
from cnnlab.engine.loss import training_loss
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.runs.run import load_trained


def test_the_loss_adds_each_auxiliary_loss_times_its_weight():
    y = torch.tensor([0, 1])
    main, a1, a2 = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)
    loss, logits = training_loss((main, a1, a2), y, (0.3, 0.5))
    assert logits is main
    assert loss.item() == pytest.approx((F.cross_entropy(main, y) + 0.3 * F.cross_entropy(a1, y)
                                         + 0.5 * F.cross_entropy(a2, y)).item())
    with pytest.raises(CnnlabError, match="returned 2 auxiliary outputs in training but declares 0 aux_loss_weights"):
        training_loss((main, a1, a2), y, ())


def test_googlenet_with_aux_heads_trains_on_main_plus_0_3_aux(tmp_path):
    model = create_model("googlenet", num_classes=3, input_size=(32, 32), aux_logits=True)
    assert model.aux_loss_weights == (0.3, 0.3)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(1)
    main, aux2, aux1 = model.train()(x)
    expected = F.cross_entropy(main, y) + 0.3 * (F.cross_entropy(aux1, y) + F.cross_entropy(aux2, y))
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    trainer = Trainer(model, TensorLoader(images, y, 4), None, FitConfig(), tmp_path, progress=False)
    torch.manual_seed(1)
    loss, correct = trainer.train_step(x, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert correct.item() == (main.argmax(1) == y).sum().item()
    assert isinstance(model.eval()(x), torch.Tensor)  # eval: the main logits alone


def test_googlenet_aux_logits_trains_end_to_end_from_the_cli_option(tmp_path, capsys):
    assert main(["train", "googlenet", "--model-option", "aux_logits=true", "--epochs", "1",
                            "--limit-train", "8", "--limit-val", "8", "--batch-size", "8", "--no-progress",
                            "--run-dir", str(tmp_path / "gn")]) == 0
    trained = load_trained(tmp_path / "gn")
    assert trained.card.model_kwargs == {"aux_logits": True} and trained.config.model_kwargs == {"aux_logits": True}


def test_course_resnet18_head_penalty_is_in_the_training_and_validation_loss(tmp_path):
    """The script's Dense(10, softmax, kernel_regularizer=l2()): Keras' loss and val_loss add 0.01·Σw² of the kernel."""
    model = create_model("resnet18-cifar", input_size=(8, 8))
    head = model.get_classifier()
    penalty = 0.01 * head.weight.square().sum().item()
    images, y = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
    loader = TensorLoader(images, y, 4, shuffle=False)
    metrics = evaluate_metrics(model, loader)
    with torch.no_grad():
        ce = F.cross_entropy(model.eval()(images.float() / 255), y).item()
    assert metrics["val_loss"] == pytest.approx(ce + penalty, rel=1e-5)
    trainer = Trainer(model.train(), loader, None, FitConfig(), tmp_path, progress=False)
    torch.manual_seed(0)
    with torch.no_grad():
        ce_train = F.cross_entropy(model(images.float() / 255), y).item()
    torch.manual_seed(0)
    loss, _ = trainer.train_step(images.float() / 255, y)
    assert loss.item() == pytest.approx(ce_train + penalty, rel=1e-4)
