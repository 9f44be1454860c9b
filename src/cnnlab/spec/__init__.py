"""CBAPD text notation: parse a network written in the course's vocabulary, infer shapes, build it.

A spec is a few header lines (``name:``, ``input: 3x32x32``, ``classes: 10``) and a body of layers
in the course's order Conv · BatchNorm · Activation · Pooling · Dropout, for example::

    C(6,5,same) B A(relu) P(max,2,s2,same) D(0.2) | F | Dense(128,relu) D(0.2) | Dense(classes)

``|`` and line breaks separate stages, ``[...]xN`` or ``LayerxN`` repeats, ``#`` starts a comment.
Shapes are inferred statically, so Flatten → Dense knows its inputs; the built network gives logits
(a final softmax is accepted and left out). The full grammar is in ``docs/cbapd.md``. Every mistake
raises :class:`SpecError`, one line with ``source:line:col``, the problem and a hint.

The package follows the pipeline: ``lexer`` (text → tokens), ``parser`` (tokens → :class:`Spec`),
``nodes`` (layers, their arguments and shape rules), ``build`` (shapes → ``nn.Module``).
"""
from ..models.course_blocks import InceptionBlock, ResBlock, conv_bn_relu
from .build import SpecNet, Stage, Step, build, build_spec_file, infer_shapes, load_spec_file
from .errors import SpecError
from .lexer import Token
from .nodes import (LRN, Act, BatchNorm, Conv, Dense, Dropout, Flatten, GlobalPool, Inception, Node, Padding, Pool,
                    Res, SepConv, Shape, Sig)
from .parser import Spec, parse_spec

__all__ = [
    "LRN", "Act", "BatchNorm", "Conv", "Dense", "Dropout", "Flatten", "GlobalPool", "Inception", "InceptionBlock",
    "Node", "Padding", "Pool", "Res", "ResBlock", "SepConv", "Shape", "Sig", "Spec", "SpecError", "SpecNet",
    "Stage", "Step", "Token", "build", "build_spec_file", "conv_bn_relu", "infer_shapes", "load_spec_file",
    "parse_spec",
]
