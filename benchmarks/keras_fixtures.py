"""Write the Keras fixtures that ``tests/test_keras_fidelity.py`` compares cnnlab against (CI has no TensorFlow).

usage: python benchmarks/keras_fixtures.py [OUT_DIR]     (default tests/fixtures/keras; needs tensorflow-cpu, h5py)
       TF_USE_LEGACY_KERAS=1 python benchmarks/keras_fixtures.py [OUT_DIR]   (needs tf_keras too: Keras 2 files)

Under Keras 3 it writes:

- ``step/<case>/``: a small model of the layers the course uses, before and after one training step as
  ``model.fit`` takes it (``train_on_batch``: Adam's defaults, sparse cross-entropy on the softmax):
  ``init``/``after``/``grad.weights.h5`` (Keras' own ``save_weights``; ``grad`` holds each trainable
  variable's gradient in its place) and ``batch.npz`` (images NHWC, labels, loss; inference outputs);
- ``import/<network>-<form>.weights.h5``: the six course networks, ``subclassed`` as seed 002 writes them
  and ``functional`` as ``keras_course.py`` builds them, at reduced widths or input sizes, with random
  biases and BatchNorm state; ``import/<network>.npz`` holds a batch and both forms' predictions;
- ``init_stats.npz``: the spread of Keras' initial kernels in the full-size course networks.

Under Keras 2 (the course's TF2 ``tf.keras``) it writes ``import/<network>-ckpt/`` as the course saves
(``model.save_weights(".../<name>.ckpt")``, a TensorFlow checkpoint) and ``import/<network>-legacy.h5``.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.keras import Input, Model, layers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras_course as kc  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
KERAS3 = not layers.Dense.__module__.startswith("tf_keras")  # TF_USE_LEGACY_KERAS=1 selects Keras 2
CLASSES = 3  # classes of the step cases' heads
BATCH = 16


# ---- one training step ----------------------------------------------------------------------------

def spatial_head(x):
    """Flatten → Dense(classes, softmax): a loss over every position of the map under test."""
    return layers.Dense(CLASSES, activation="softmax")(layers.Flatten()(x))


def conv_bn_relu(x, filters: int = 4):
    return layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(x)))


def _pooled(pool: Callable) -> Callable:
    return lambda x: spatial_head(pool(layers.Conv2D(4, 3, padding="same")(x)))


def _resnet_pair(x):
    x = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same", use_bias=False)(x)))
    x = kc._resnet_block(kc._resnet_block(x, 6, 2, True), 6, 1, False)
    return layers.Dense(CLASSES, activation="softmax")(layers.GlobalAveragePooling2D()(x))


def _inception(x):
    x = kc._inception_block(conv_bn_relu(x), 3, 2)
    return layers.Dense(CLASSES, activation="softmax")(layers.GlobalAveragePooling2D()(x))


def _dense_dropout(x):
    x = layers.Dropout(0.0)(layers.Dense(6, activation="relu")(layers.Flatten()(x)))
    return layers.Dense(CLASSES, activation="softmax")(x)


def _l2_head(x):
    """The course ResNet18's head: Dense(softmax) with ``kernel_regularizer=l2()`` after global pooling."""
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, padding="same")(x))
    return layers.Dense(CLASSES, activation="softmax", kernel_regularizer=kc.L2())(x)


# name -> (builder of the output from the input, input H x W x C, classes, steps)
STEP_CASES: dict[str, tuple[Callable, tuple[int, int, int], int, int]] = {
    "conv_same_s2": (lambda x: spatial_head(layers.Conv2D(4, 3, strides=2, padding="same")(x)), (7, 7, 3), CLASSES, 1),
    "conv_valid_sigmoid": (lambda x: spatial_head(layers.Activation("sigmoid")(layers.Conv2D(4, 5)(x))),
                           (7, 7, 3), CLASSES, 1),
    "bn_relu": (lambda x: spatial_head(conv_bn_relu(x)), (7, 7, 3), CLASSES, 1),
    "maxpool_same": (_pooled(layers.MaxPool2D(2, strides=2, padding="same")), (7, 7, 3), CLASSES, 1),
    "maxpool_valid": (_pooled(layers.MaxPool2D(3, strides=2)), (7, 7, 3), CLASSES, 1),
    "avgpool_same": (_pooled(layers.AveragePooling2D(2, strides=2, padding="same")), (7, 7, 3), CLASSES, 1),
    "avgpool_valid": (_pooled(layers.AveragePooling2D(3, strides=1)), (7, 7, 3), CLASSES, 1),
    "dense_dropout": (_dense_dropout, (5, 5, 2), CLASSES, 1),
    "inception": (_inception, (7, 7, 3), CLASSES, 1),
    "residual": (_resnet_pair, (7, 7, 3), CLASSES, 1),
    "baseline": (lambda x: kc.baseline(x, drop=0.0), (8, 8, 3), 10, 3),
    "dense_l2": (_l2_head, (7, 7, 3), CLASSES, 1),  # last: the cases before keep their seeds
}


def compiled(build: Callable, shape: tuple[int, int, int]) -> Model:
    """The case's model compiled as the course compiles: ``optimizer='adam'``, sparse cross-entropy."""
    inputs = Input(shape)
    model = Model(inputs, build(inputs))
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    return model


def gradients(model: Model, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Gradients of the training loss at the model's current weights (the BN statistics are not kept)."""
    saved = [v.numpy() for v in model.non_trainable_variables]
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    for v, s in zip(model.non_trainable_variables, saved):
        v.assign(s)
    return [g.numpy() for g in grads]


def repack(src: Path, dst: Path) -> None:
    """Rewrite a Keras weights file without its optimizer state in compact HDF5: the same groups, arrays and
    attributes (what Keras and cnnlab read), a quarter of the bytes. ``h5py``'s copy would keep the old format."""
    def rebuild(name: str, obj) -> None:
        if name.startswith("optimizer"):
            return
        made = g.create_dataset(name, data=obj[()]) if isinstance(obj, h5py.Dataset) else g.require_group(name)
        made.attrs.update(obj.attrs)

    with h5py.File(src, "r") as f, h5py.File(dst, "w", libver="latest") as g:
        f.visititems(rebuild)
        g.attrs.update(f.attrs)


def datasets(path: Path) -> dict[str, np.ndarray]:
    """Every weight array of a Keras weights file by its path (``layers/conv2d/vars/0``), optimizer left out."""
    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                     and not name.startswith("optimizer") else None)
    return found


def saved_arrays(model: Model, tmp: Path, values: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The model's weight arrays as ``save_weights`` lays them out; ``values`` replace the trainable ones."""
    kept = [v.numpy() for v in model.trainable_variables]
    for v, g in zip(model.trainable_variables, values or kept):
        v.assign(g)
    model.save_weights(tmp)
    for v, k in zip(model.trainable_variables, kept):
        v.assign(k)
    return datasets(tmp)


def write_step_case(out: Path, name: str, build: Callable, shape: tuple[int, int, int], classes: int,
                    steps: int, seed: int) -> None:
    """Initial weights (``<case>.weights.h5``); batches, first-step gradients, each step's state (``<case>.npz``).

    The npz keys are ``grad:<path>`` and ``after<k>:<path>`` (after the first and the last step) with
    ``<path>`` the dataset's path in the weights file, so the test can write Keras files of those states.
    """
    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = compiled(build, shape)
    xs = rng.integers(0, 256, (steps, BATCH, *shape), dtype=np.uint8)  # pixels, divided by 255 as the course does
    ys = rng.integers(0, classes, (steps, BATCH))
    step_dir = out / "step"
    tmp = step_dir / f"{name}.tmp.weights.h5"
    model.save_weights(tmp)
    repack(tmp, step_dir / f"{name}.weights.h5")
    arrays = {f"grad:{k}": v for k, v in saved_arrays(model, tmp, gradients(model, xs[0] / 255, ys[0])).items()}
    losses = []
    for k, (x, y) in enumerate(zip(xs, ys), 1):
        losses.append(float(model.train_on_batch(x / 255, y)))
        if k in (1, steps):
            arrays.update({f"after{k}:{p}": v for p, v in saved_arrays(model, tmp).items()})
    if name.startswith("baseline"):  # the course's dropout in inference: an identity
        dropped = compiled(kc.baseline, shape)
        dropped.set_weights(model.get_weights())
        arrays["eval_probs"] = dropped(xs[0] / 255, training=False).numpy()
    tmp.unlink()
    np.savez_compressed(step_dir / f"{name}.npz", x=xs, y=ys, loss=np.array(losses), **arrays)


def write_dropout_scaling(out: Path) -> None:
    """Keras' training-mode dropout of ones: survivors are scaled by 1 / (1 - rate)."""
    tf.keras.utils.set_random_seed(0)
    y = layers.Dropout(0.25)(tf.ones((4000,)), training=True).numpy()
    np.savez_compressed(out / "step" / "dropout_scaling.npz", rate=0.25, y=y.astype(np.float16))


# ---- the course networks, saved -----------------------------------------------------------------

# network -> (input H x W x C, width arguments shared by both forms)
IMPORT_CASES: dict[str, tuple[tuple[int, int, int], dict]] = {
    "baseline-cifar": ((8, 8, 3), {}),
    "lenet5-cifar": ((20, 20, 3), {}),
    "alexnet8-cifar": ((32, 32, 3), {"div": 32}),
    "vgg16-cifar": ((32, 32, 3), {"div": 32}),
    "inception10-cifar": ((16, 16, 3), {"ch": 2}),
    "resnet18-cifar": ((16, 16, 3), {"filters": 2}),
}


def randomise_state(model: Model, rng: np.random.Generator) -> None:
    """Random biases and BatchNorm parameters/statistics, so a misplaced array changes the predictions."""
    for v in model.weights:
        leaf = v.path.rsplit("/", 1)[-1] if KERAS3 else v.name.split("/")[-1].split(":")[0]
        if leaf in ("bias", "beta", "moving_mean"):
            v.assign(rng.normal(0, 0.2, v.shape).astype(np.float32))
        elif leaf in ("gamma", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))


def built(make: Callable[[], Model], shape: tuple[int, int, int], seed: int) -> Model:
    """A course network built on ``shape`` with Keras' initial kernels and random biases and BN state."""
    tf.keras.utils.set_random_seed(seed)
    model = make()
    model(np.zeros((1, *shape), np.float32))
    randomise_state(model, np.random.default_rng(seed))
    return model


def import_batch(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Two images as uint8, as CIFAR's pixels are; both frameworks divide by 255."""
    return np.random.default_rng(seed).integers(0, 256, (2, *shape), dtype=np.uint8)


def forms(name: str, shape: tuple[int, int, int], widths: dict) -> dict[str, Callable[[], Model]]:
    """The network's subclassed (seed 002) and functional (keras_course.py) constructors."""
    def functional() -> Model:
        inputs = Input(shape)
        return Model(inputs, kc.BUILDERS[name](inputs, **widths))

    return {"subclassed": lambda: kc.SUBCLASSED[name](**widths), "functional": functional}


def write_keras3_imports(out: Path) -> None:
    for i, (name, (shape, widths)) in enumerate(IMPORT_CASES.items()):
        x = import_batch(shape, i)
        preds = {}
        for form, make in forms(name, shape, widths).items():
            model = built(make, shape, 100 + i)
            tmp = out / "import" / f"{name}-{form}.tmp.weights.h5"
            model.save_weights(tmp)
            repack(tmp, out / "import" / f"{name}-{form}.weights.h5")
            tmp.unlink()
            preds[form] = model(x.astype(np.float32) / 255, training=False).numpy()
        np.savez_compressed(out / "import" / f"{name}.npz", x=x, **preds)


KERAS2_CASES = ("baseline-cifar", "inception10-cifar", "resnet18-cifar")  # flat, and two ways of nesting
LEGACY_CASES = ("inception10-cifar", "resnet18-cifar")  # the flat legacy layout has synthetic tests


def write_keras2_imports(out: Path) -> None:
    """The course's own call under TF2's Keras 2: a TensorFlow checkpoint; and the legacy HDF5 weights."""
    for i, (name, (shape, widths)) in enumerate(IMPORT_CASES.items()):
        if name not in KERAS2_CASES:
            continue
        x = import_batch(shape, i)
        model = built(forms(name, shape, widths)["subclassed"], shape, 200 + i)
        ckpt = out / "import" / f"{name}-ckpt"
        shutil.rmtree(ckpt, ignore_errors=True)
        model.save_weights(str(ckpt / "model.ckpt"))
        if name in LEGACY_CASES:
            tmp = out / "import" / f"{name}-legacy.tmp.h5"
            model.save_weights(str(tmp))
            repack(tmp, out / "import" / f"{name}-legacy.h5")
            tmp.unlink()
        np.savez_compressed(out / "import" / f"{name}-keras2.npz", x=x,
                            subclassed=model(x.astype(np.float32) / 255, training=False).numpy())


# ---- initial weights ------------------------------------------------------------------------------

def write_init_stats(out: Path) -> None:
    """Per kernel of the full-size functional networks: its shape, largest magnitude and standard deviation."""
    stats = {}
    for name in ("baseline-cifar", "lenet5-cifar", "resnet18-cifar"):
        tf.keras.utils.set_random_seed(0)
        model = kc.course_model(name)
        for j, v in enumerate(w for w in model.trainable_weights if len(w.shape) > 1):
            a = v.numpy()
            stats[f"{name}/{j}"] = np.array([a.size, np.abs(a).max(), a.std()])
        stats[f"{name}/biases_zero"] = np.array(all(not np.any(b.numpy()) for b in model.trainable_weights
                                                    if b.path.endswith("/bias")))
    np.savez_compressed(out / "init_stats.npz", **stats)


def main(out: Path) -> None:
    for sub in ("step", "import"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if not KERAS3:
        write_keras2_imports(out)
        return
    for seed, (name, case) in enumerate(STEP_CASES.items()):
        write_step_case(out, name, *case, seed=seed)
    write_dropout_scaling(out)
    write_keras3_imports(out)
    write_init_stats(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "keras")
