"""The course's six CIFAR-10 networks in Keras, layer for layer as the course's TensorFlow 2 code builds them.

Two forms of each: functional builders (``BUILDERS``, ``course_model``), used by ``throughput.py`` to
time the course's own training code (``model.fit`` with Adam, sparse categorical cross-entropy, batch 32,
images already divided by 255) next to cnnlab's; and the course's subclassed ``Model`` classes as seed
002 writes them (``SUBCLASSED``), whose saved weights nest by attribute name as a student's files do.
``keras_fixtures.py`` saves both. Width arguments (``div``, ``ch``, ``filters``) default to the course's
values; smaller ones keep test fixtures small with the same layout.
Needs tensorflow-cpu: ``pip install -e '.[keras-bench]'``. Not part of the cnnlab package, which never
imports TensorFlow.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf
from tensorflow.keras import Input, Model, layers
from tensorflow.keras.layers import (Activation, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
                                     GlobalAveragePooling2D, MaxPool2D)

L2 = tf.keras.regularizers.l2  # the course's ResNet18 head uses Dense(..., kernel_regularizer=l2())


# ---- functional forms ------------------------------------------------------------------------

def _cbr(x, filters: int, kernel: int = 3, strides: int = 1):
    """The course's ConvBNRelu: conv ('same') → BatchNormalization → relu."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same")(x)
    return layers.Activation("relu")(layers.BatchNormalization()(x))


def baseline(x, drop: float = 0.2):
    x = layers.Conv2D(6, 5, padding="same")(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.Dropout(drop)(layers.MaxPool2D(2, strides=2, padding="same")(x))
    x = layers.Dropout(drop)(layers.Dense(128, activation="relu")(layers.Flatten()(x)))
    return layers.Dense(10, activation="softmax")(x)


def lenet5(x):
    x = layers.MaxPool2D(2, strides=2)(layers.Conv2D(6, 5, activation="sigmoid")(x))
    x = layers.MaxPool2D(2, strides=2)(layers.Conv2D(16, 5, activation="sigmoid")(x))
    x = layers.Dense(84, activation="sigmoid")(layers.Dense(120, activation="sigmoid")(layers.Flatten()(x)))
    return layers.Dense(10, activation="softmax")(x)


def alexnet8(x, div: int = 1):
    for filters in (96, 256):
        x = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(filters // div, 3)(x)))
        x = layers.MaxPool2D(3, strides=2)(x)
    for filters in (384, 384, 256):
        x = layers.Conv2D(filters // div, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(layers.MaxPool2D(3, strides=2)(x))
    for _ in range(2):
        x = layers.Dropout(0.5)(layers.Dense(2048 // div, activation="relu")(x))
    return layers.Dense(10, activation="softmax")(x)


def vgg16(x, div: int = 1):
    for filters, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            x = _cbr(x, filters // div)
        x = layers.Dropout(0.2)(layers.MaxPool2D(2, strides=2, padding="same")(x))
    x = layers.Flatten()(x)
    for _ in range(2):
        x = layers.Dropout(0.2)(layers.Dense(512 // div, activation="relu")(x))
    return layers.Dense(10, activation="softmax")(x)


def _inception_block(x, ch: int, strides: int):
    b1 = _cbr(x, ch, 1, strides)
    b2 = _cbr(_cbr(x, ch, 1, strides), ch, 3)
    b3 = _cbr(_cbr(x, ch, 1, strides), ch, 5)
    b4 = _cbr(layers.MaxPool2D(3, strides=1, padding="same")(x), ch, 1, strides)
    return layers.Concatenate(axis=3)([b1, b2, b3, b4])


def inception10(x, ch: int = 16):
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


def resnet18(x, filters: int = 64):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for block_id, blocks in enumerate((2, 2, 2, 2)):
        for layer_id in range(blocks):
            first = block_id != 0 and layer_id == 0
            x = _resnet_block(x, filters, 2 if first else 1, first)
        filters *= 2
    head = layers.Dense(10, activation="softmax", kernel_regularizer=L2())  # p46's script; its slide: Dense(10)
    return head(layers.GlobalAveragePooling2D()(x))


BUILDERS: dict[str, Callable] = {"baseline-cifar": baseline, "lenet5-cifar": lenet5, "alexnet8-cifar": alexnet8,
                                 "vgg16-cifar": vgg16, "inception10-cifar": inception10, "resnet18-cifar": resnet18}


def course_model(name: str, input_shape: tuple[int, int, int] = (32, 32, 3), **widths) -> Model:
    """The course network ``name`` (cnnlab's registry name) in functional form, compiled as the course compiles it."""
    inputs = Input(input_shape)
    model = Model(inputs, BUILDERS[name](inputs, **widths), name=name)
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                  metrics=["sparse_categorical_accuracy"])
    return model


# ---- the course's subclassed models (seed 002, p27-p46) -------------------------------------------

class Baseline(Model):
    def __init__(self):
        super().__init__()
        self.c1 = Conv2D(filters=6, kernel_size=(5, 5), padding='same')
        self.b1 = BatchNormalization()
        self.a1 = Activation('relu')
        self.p1 = MaxPool2D(pool_size=(2, 2), strides=2, padding='same')
        self.d1 = Dropout(0.2)
        self.flatten = Flatten()
        self.f1 = Dense(128, activation='relu')
        self.d2 = Dropout(0.2)
        self.f2 = Dense(10, activation='softmax')

    def call(self, x):
        x = self.d1(self.p1(self.a1(self.b1(self.c1(x)))))
        x = self.d2(self.f1(self.flatten(x)))
        return self.f2(x)


class LeNet5(Model):
    def __init__(self):
        super().__init__()
        self.c1 = Conv2D(filters=6, kernel_size=(5, 5), activation='sigmoid')
        self.p1 = MaxPool2D(pool_size=(2, 2), strides=2)
        self.c2 = Conv2D(filters=16, kernel_size=(5, 5), activation='sigmoid')
        self.p2 = MaxPool2D(pool_size=(2, 2), strides=2)
        self.flatten = Flatten()
        self.f1 = Dense(120, activation='sigmoid')
        self.f2 = Dense(84, activation='sigmoid')
        self.f3 = Dense(10, activation='softmax')

    def call(self, x):
        x = self.flatten(self.p2(self.c2(self.p1(self.c1(x)))))
        return self.f3(self.f2(self.f1(x)))


class AlexNet8(Model):
    def __init__(self, div: int = 1):
        super().__init__()
        self.c1 = Conv2D(filters=96 // div, kernel_size=(3, 3))
        self.b1 = BatchNormalization()
        self.a1 = Activation('relu')
        self.p1 = MaxPool2D(pool_size=(3, 3), strides=2)
        self.c2 = Conv2D(filters=256 // div, kernel_size=(3, 3))
        self.b2 = BatchNormalization()
        self.a2 = Activation('relu')
        self.p2 = MaxPool2D(pool_size=(3, 3), strides=2)
        self.c3 = Conv2D(filters=384 // div, kernel_size=(3, 3), padding='same', activation='relu')
        self.c4 = Conv2D(filters=384 // div, kernel_size=(3, 3), padding='same', activation='relu')
        self.c5 = Conv2D(filters=256 // div, kernel_size=(3, 3), padding='same', activation='relu')
        self.p3 = MaxPool2D(pool_size=(3, 3), strides=2)
        self.flatten = Flatten()
        self.f1 = Dense(2048 // div, activation='relu')
        self.d1 = Dropout(0.5)
        self.f2 = Dense(2048 // div, activation='relu')
        self.d2 = Dropout(0.5)
        self.f3 = Dense(10, activation='softmax')

    def call(self, x):
        x = self.p1(self.a1(self.b1(self.c1(x))))
        x = self.p2(self.a2(self.b2(self.c2(x))))
        x = self.p3(self.c5(self.c4(self.c3(x))))
        x = self.d2(self.f2(self.d1(self.f1(self.flatten(x)))))
        return self.f3(x)


class VGG16(Model):
    """The course's 13 attribute-named C·B·A layers (c1/b1/a1 … c13/b13/a13), pools p1-p5, dropouts d1-d7."""

    STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

    def __init__(self, div: int = 1):
        super().__init__()
        for stage, i, filters, closes in self.layout():  # made in the course's order: its names and draws
            setattr(self, f"c{i}", Conv2D(filters=filters // div, kernel_size=(3, 3), padding='same'))
            setattr(self, f"b{i}", BatchNormalization())
            setattr(self, f"a{i}", Activation('relu'))
            if closes:
                setattr(self, f"p{stage}", MaxPool2D(pool_size=(2, 2), strides=2, padding='same'))
                setattr(self, f"d{stage}", Dropout(0.2))
        self.flatten = Flatten()
        self.f1 = Dense(512 // div, activation='relu')
        self.d6 = Dropout(0.2)
        self.f2 = Dense(512 // div, activation='relu')
        self.d7 = Dropout(0.2)
        self.f3 = Dense(10, activation='softmax')

    @classmethod
    def layout(cls):
        """(stage, convolution number, filters, whether it closes its stage) of the 13 convolutions."""
        i = 0
        for stage, (filters, convs) in enumerate(cls.STAGES, 1):
            for k in range(convs):
                i += 1
                yield stage, i, filters, k == convs - 1

    def call(self, x):
        for stage, i, _, closes in self.layout():
            x = getattr(self, f"a{i}")(getattr(self, f"b{i}")(getattr(self, f"c{i}")(x)))
            if closes:
                x = getattr(self, f"d{stage}")(getattr(self, f"p{stage}")(x))
        x = self.d7(self.f2(self.d6(self.f1(self.flatten(x)))))
        return self.f3(x)


class ConvBNRelu(Model):
    def __init__(self, ch, kernelsz=3, strides=1, padding='same'):
        super().__init__()
        self.model = tf.keras.models.Sequential([
            Conv2D(ch, kernelsz, strides=strides, padding=padding),
            BatchNormalization(),
            Activation('relu')
        ])

    def call(self, x):
        return self.model(x)


class InceptionBlk(Model):
    def __init__(self, ch, strides=1):
        super().__init__()
        self.ch = ch
        self.strides = strides
        self.c1 = ConvBNRelu(ch, kernelsz=1, strides=strides)
        self.c2_1 = ConvBNRelu(ch, kernelsz=1, strides=strides)
        self.c2_2 = ConvBNRelu(ch, kernelsz=3, strides=1)
        self.c3_1 = ConvBNRelu(ch, kernelsz=1, strides=strides)
        self.c3_2 = ConvBNRelu(ch, kernelsz=5, strides=1)
        self.p4_1 = MaxPool2D(3, strides=1, padding='same')
        self.c4_2 = ConvBNRelu(ch, kernelsz=1, strides=strides)

    def call(self, x):
        x1 = self.c1(x)
        x2_2 = self.c2_2(self.c2_1(x))
        x3_2 = self.c3_2(self.c3_1(x))
        x4_2 = self.c4_2(self.p4_1(x))
        return tf.concat([x1, x2_2, x3_2, x4_2], axis=3)


class Inception10(Model):
    """Channels double after each pair of blocks, as the course's p40 script and parameter count have it."""

    def __init__(self, num_blocks, num_classes, init_ch=16, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = init_ch
        self.out_channels = init_ch
        self.num_blocks = num_blocks
        self.init_ch = init_ch
        self.c1 = ConvBNRelu(init_ch)
        self.blocks = tf.keras.models.Sequential()
        for block_id in range(num_blocks):
            for layer_id in range(2):
                block = InceptionBlk(self.out_channels, strides=2 if layer_id == 0 else 1)
                self.blocks.add(block)
            self.out_channels *= 2
        self.p1 = GlobalAveragePooling2D()
        self.f1 = Dense(num_classes, activation='softmax')

    def call(self, x):
        return self.f1(self.p1(self.blocks(self.c1(x))))


class ResnetBlock(Model):
    def __init__(self, filters, strides=1, residual_path=False):
        super().__init__()
        self.filters = filters
        self.strides = strides
        self.residual_path = residual_path
        self.c1 = Conv2D(filters, (3, 3), strides=strides, padding='same', use_bias=False)
        self.b1 = BatchNormalization()
        self.a1 = Activation('relu')
        self.c2 = Conv2D(filters, (3, 3), strides=1, padding='same', use_bias=False)
        self.b2 = BatchNormalization()
        if residual_path:
            self.down_c1 = Conv2D(filters, (1, 1), strides=strides, padding='same', use_bias=False)
            self.down_b1 = BatchNormalization()
        self.a2 = Activation('relu')

    def call(self, inputs):
        residual = inputs
        y = self.b2(self.c2(self.a1(self.b1(self.c1(inputs)))))
        if self.residual_path:
            residual = self.down_b1(self.down_c1(inputs))
        return self.a2(y + residual)


class ResNet18(Model):
    """p46_cifar10_resnet18.py's ResNet18. Its slide prints the head as ``Dense(10)``, logits, which the
    course's ``SparseCategoricalCrossentropy(from_logits=False)`` reads as probabilities (clipped to
    [1e-7, 1]): that model stays at chance. The script's head, softmax with ``l2()``, is the default;
    ``slide_head=True`` builds the slide's."""

    def __init__(self, block_list, initial_filters=64, slide_head=False):
        super().__init__()
        self.num_blocks = len(block_list)
        self.block_list = block_list
        self.out_filters = initial_filters
        self.c1 = Conv2D(self.out_filters, (3, 3), strides=1, padding='same', use_bias=False,
                         kernel_initializer='he_normal')
        self.b1 = tf.keras.layers.BatchNormalization()
        self.a1 = Activation('relu')
        self.blocks = tf.keras.models.Sequential()
        for block_id in range(len(block_list)):
            for layer_id in range(block_list[block_id]):
                if block_id != 0 and layer_id == 0:
                    block = ResnetBlock(self.out_filters, strides=2, residual_path=True)
                else:
                    block = ResnetBlock(self.out_filters, residual_path=False)
                self.blocks.add(block)
            self.out_filters *= 2
        self.p1 = tf.keras.layers.GlobalAveragePooling2D()
        self.f1 = (tf.keras.layers.Dense(10) if slide_head else
                   tf.keras.layers.Dense(10, activation='softmax', kernel_regularizer=L2()))

    def call(self, inputs):
        x = self.a1(self.b1(self.c1(inputs)))
        return self.f1(self.p1(self.blocks(x)))


SUBCLASSED: dict[str, Callable[..., Model]] = {
    "baseline-cifar": Baseline, "lenet5-cifar": LeNet5, "alexnet8-cifar": AlexNet8, "vgg16-cifar": VGG16,
    "inception10-cifar": lambda ch=16: Inception10(num_blocks=2, num_classes=10, init_ch=ch),
    "resnet18-cifar": lambda filters=64: ResNet18([2, 2, 2, 2], initial_filters=filters),
}

__all__ = ["BUILDERS", "SUBCLASSED", "course_model"]
