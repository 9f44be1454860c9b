"""The course's six CIFAR-10 networks in Keras, layer for layer as the course's TensorFlow 2 code builds them.

Used by ``throughput.py`` to time the course's own training code (``model.fit`` with Adam, sparse
categorical cross-entropy, batch 32, images already divided by 255) next to cnnlab's, in one process.
Needs tensorflow-cpu: ``pip install -e '.[keras-bench]'``. Not part of the cnnlab package, which never
imports TensorFlow.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf
from tensorflow.keras import Input, Model, layers

L2 = tf.keras.regularizers.l2  # the course's ResNet18 head uses Dense(..., kernel_regularizer=l2())


def _cbr(x, filters: int, kernel: int = 3, strides: int = 1):
    """The course's ConvBNRelu: conv ('same') → BatchNormalization → relu."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same")(x)
    return layers.Activation("relu")(layers.BatchNormalization()(x))


def baseline(x):
    x = layers.Conv2D(6, 5, padding="same")(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.Dropout(0.2)(layers.MaxPool2D(2, strides=2, padding="same")(x))
    x = layers.Dropout(0.2)(layers.Dense(128, activation="relu")(layers.Flatten()(x)))
    return layers.Dense(10, activation="softmax")(x)


def lenet5(x):
    x = layers.MaxPool2D(2, strides=2)(layers.Conv2D(6, 5, activation="sigmoid")(x))
    x = layers.MaxPool2D(2, strides=2)(layers.Conv2D(16, 5, activation="sigmoid")(x))
    x = layers.Dense(84, activation="sigmoid")(layers.Dense(120, activation="sigmoid")(layers.Flatten()(x)))
    return layers.Dense(10, activation="softmax")(x)


def alexnet8(x):
    for filters in (96, 256):
        x = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(filters, 3)(x)))
        x = layers.MaxPool2D(3, strides=2)(x)
    for filters in (384, 384, 256):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(layers.MaxPool2D(3, strides=2)(x))
    for _ in range(2):
        x = layers.Dropout(0.5)(layers.Dense(2048, activation="relu")(x))
    return layers.Dense(10, activation="softmax")(x)


def vgg16(x):
    for filters, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            x = _cbr(x, filters)
        x = layers.Dropout(0.2)(layers.MaxPool2D(2, strides=2, padding="same")(x))
    x = layers.Flatten()(x)
    for _ in range(2):
        x = layers.Dropout(0.2)(layers.Dense(512, activation="relu")(x))
    return layers.Dense(10, activation="softmax")(x)


def _inception_block(x, ch: int, strides: int):
    b1 = _cbr(x, ch, 1, strides)
    b2 = _cbr(_cbr(x, ch, 1, strides), ch, 3)
    b3 = _cbr(_cbr(x, ch, 1, strides), ch, 5)
    b4 = _cbr(layers.MaxPool2D(3, strides=1, padding="same")(x), ch, 1, strides)
    return layers.Concatenate(axis=3)([b1, b2, b3, b4])


def inception10(x):
    ch = 16
    x = _cbr(x, ch)
    for _ in range(2):  # num_blocks=2, each a stride-2 and a stride-1 Inception block, then channels double
        x = _inception_block(_inception_block(x, ch, 2), ch, 1)
        ch *= 2
    return layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))


def _resnet_block(x, filters: int, strides: int, residual_path: bool):
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    y = layers.Activation("relu")(layers.BatchNormalization()(y))
    y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
    if residual_path:
        x = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=strides, padding="same", use_bias=False)(x))
    return layers.Activation("relu")(layers.Add()([y, x]))


def resnet18(x):
    filters = 64
    x = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(64, 3, padding="same", use_bias=False)(x)))
    for block_id, blocks in enumerate((2, 2, 2, 2)):
        for layer_id in range(blocks):
            first = block_id != 0 and layer_id == 0
            x = _resnet_block(x, filters, 2 if first else 1, first)
        filters *= 2
    return layers.Dense(10, activation="softmax", kernel_regularizer=L2())(layers.GlobalAveragePooling2D()(x))


BUILDERS: dict[str, Callable] = {"baseline-cifar": baseline, "lenet5-cifar": lenet5, "alexnet8-cifar": alexnet8,
                                 "vgg16-cifar": vgg16, "inception10-cifar": inception10, "resnet18-cifar": resnet18}


def course_model(name: str) -> Model:
    """The course network ``name`` (cnnlab's registry name), compiled as the course compiles it."""
    inputs = Input((32, 32, 3))
    model = Model(inputs, BUILDERS[name](inputs), name=name)
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                  metrics=["sparse_categorical_accuracy"])
    return model


__all__ = ["BUILDERS", "course_model"]
