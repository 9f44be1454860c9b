"""The course's formulas: numbers and worked text."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.explain.formulas import compare_kernels, conv_example, conv_output, dense_params, receptive_field


def test_dense_params_course_number():
    w = dense_params([784, 128, 10])
    assert w.value == 101_770
    assert "784 × 128 w + 128 b = 100,480" in w.explain() and "101,770" in w.explain()


@pytest.mark.parametrize("n,k,s,padding,expected", [
    (5, 3, 1, "same", 5), (5, 3, 1, "valid", 3),  # the course's 5x5x1 example
    (32, 3, 2, "same", 16), (32, 3, 2, "valid", 15), (7, 2, 2, "same", 4), (28, 5, 1, "valid", 24),
    (32, 3, 2, 1, 16), (224, 7, 2, 3, 112),
])
def test_conv_output(n, k, s, padding, expected):
    w = conv_output(n, k, s, padding)
    assert w.value == expected
    assert w.explain().rstrip().endswith(str(expected))


def test_conv_output_texts_show_the_course_formulas():
    assert "ceil(5 / 1)" in conv_output(5, 3, 1, "same").explain()
    assert "ceil((5 - 3 + 1) / 1)" in conv_output(5, 3, 1, "valid").explain()
    assert "floor((32 + 2 - 1·2 - 1) / 2) + 1" in conv_output(32, 3, 2, 1).explain()


def test_conv_output_dilation():
    assert conv_output(7, 3, 1, "valid", dilation=2).value == 3


def test_receptive_field():
    assert receptive_field([(3, 1), (3, 1)]).value == 5  # two 3x3 see what one 5x5 sees
    assert receptive_field([(5, 1), (2, 2), (5, 1), (2, 2)]).value == 16
    assert receptive_field([(3, 1, 2)]).value == 5
    assert "r = 3 + (3 - 1)·1·1 = 5" in receptive_field([(3, 1), (3, 1)]).explain()


def test_compare_kernels_course_numbers():
    w = compare_kernels(32)
    v = w.value
    assert (v.params_3x3, v.params_5x5) == (18, 25)
    assert v.macs_3x3 == 18 * 32**2 - 108 * 32 + 180
    assert v.macs_5x5 == 25 * 32**2 - 200 * 32 + 400
    assert v.break_even == pytest.approx(10)
    assert "18x² - 108x + 180" in w.explain() and "25x² - 200x + 400" in w.explain()
    assert compare_kernels(10).value.macs_3x3 == compare_kernels(10).value.macs_5x5
    assert compare_kernels(11).value.macs_3x3 < compare_kernels(11).value.macs_5x5
    assert compare_kernels(9).value.macs_3x3 > compare_kernels(9).value.macs_5x5
    with pytest.raises(CnnlabError, match="needs --input 5 or more"):
        compare_kernels(4)


@pytest.mark.parametrize("x", [5, 12, 32])
def test_compare_kernels_agrees_with_flop_counter(x):
    def macs(model):
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 1, x, x))
        return counter.get_total_flops() // 2

    two = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.Conv2d(1, 1, 3, bias=False))
    one = nn.Conv2d(1, 1, 5, bias=False)
    v = compare_kernels(x).value
    assert (v.macs_3x3, v.macs_5x5) == (macs(two), macs(one))


def test_conv_example_is_the_course_answer():
    w = conv_example()
    assert w.value == 1
    assert w.explain().splitlines()[1].strip() == "(-1)*1 + (0)*0 + (1)*2"
    assert w.explain().rstrip().endswith("+ 1 = 1")
    patch = torch.tensor([[1.0, 0, 2], [5, 4, 2], [3, 4, 5]]).view(1, 1, 3, 3)
    kernel = torch.tensor([[-1.0, 0, 1]] * 3).view(1, 1, 3, 3)
    assert torch.nn.functional.conv2d(patch, kernel, torch.ones(1)).item() == 1  # PyTorch agrees


@pytest.mark.parametrize("x", ["1", "4"])
def test_compare_kernels_on_a_too_small_input_is_one_line_from_the_cli(x, capsys):
    assert main(["explain", "compare-kernels", "--input", x]) == 2
    err = capsys.readouterr().err
    assert err == f"cnnlab: error: compare-kernels needs --input 5 or more: a 5x5 valid convolution does not fit a " \
                  f"{x}x{x} input\n"
