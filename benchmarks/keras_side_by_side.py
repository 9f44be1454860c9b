"""The course's own Keras training of a network on the first N CIFAR-10 training images: final validation accuracy.

usage: python benchmarks/keras_side_by_side.py DATA_DIR [--model baseline-cifar] [--form subclassed]
       [--limit-train 8000] [--epochs 2] [--seeds 0 1] [--limit-val N] [--threads 1] [--json OUT]
       (needs tensorflow-cpu)

``--json`` writes each seed's per-epoch validation accuracy and seconds, and the wall seconds of its whole
``fit`` (validation included), which ``course_fidelity.py`` reads.

The data are the official python batches (``DATA_DIR/cifar-10-batches-py``) that ``cnnlab train
--dataset cifar10 --data-dir DATA_DIR --limit-train N`` reads, in the same order; the training is the
course script's: ``model.fit(batch_size=32, validation_data=test)`` of the subclassed model of seed 002
(``--form functional``: keras_course.py's functional one). TF_USE_LEGACY_KERAS=1 (with tf_keras) runs it
on TF2's Keras 2, the course's own. Under Keras 3 a subclassed model whose ``call(self, x)`` takes no
``training`` argument trains its BatchNormalization in inference mode and without dropout (its inner
layers see ``training=None`` inside ``fit``): not the network the course describes, nor what Keras 2 ran.
"""
from __future__ import annotations

import argparse
import os
import json
import pickle
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras_course as kc  # noqa: E402



class EpochTimes(tf.keras.callbacks.Callback):
    """Wall seconds of each epoch's training, validation excluded (as cnnlab's history ``seconds``)."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.trained = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self.trained = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(self.trained if self.trained is not None else time.perf_counter() - self.start)


def batches(data_dir: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x 32 x 32 x 3, divided by 255 as the course does) and labels of the named batch files."""
    xs, ys = [], []
    for name in names:
        with open(data_dir / "cifar-10-batches-py" / name, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        xs.append(d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d[b"labels"]))
    return np.concatenate(xs) / 255.0, np.concatenate(ys)


def run(model_name: str, form: str, x, y, x_val, y_val, epochs: int, seed: int) -> dict[str, list[float]]:
    """Train as the course script does from seed ``seed``; each epoch's validation accuracy and seconds."""
    tf.keras.utils.set_random_seed(seed)
    if form == "subclassed":
        model = kc.SUBCLASSED[model_name]()
    else:
        inputs = tf.keras.Input(x.shape[1:])
        model = tf.keras.Model(inputs, kc.BUILDERS[model_name](inputs))
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                  metrics=["sparse_categorical_accuracy"])
    times = EpochTimes()
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=32, epochs=epochs, validation_data=(x_val, y_val), verbose=0,
                        callbacks=[times])
    return {"val_accuracy": [float(v) for v in history.history["val_sparse_categorical_accuracy"]],
            "seconds": times.seconds, "wall": time.perf_counter() - start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", type=Path)
    p.add_argument("--model", default="baseline-cifar", choices=sorted(kc.SUBCLASSED))
    p.add_argument("--form", default="subclassed", choices=["subclassed", "functional"])
    p.add_argument("--limit-train", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--limit-val", type=int, help="validate on the first N test_batch images (default: all)")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow's intra-op threads (inter-op: 1)")
    p.add_argument("--json", type=Path, help="write {seed: {val_accuracy: [...], seconds: [...]}} here")
    a = p.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    x, y = batches(a.data_dir, [f"data_batch_{i}" for i in range(1, 6)])
    x_val, y_val = batches(a.data_dir, ["test_batch"])
    x_val, y_val = x_val[:a.limit_val], y_val[:a.limit_val]
    runs = {s: run(a.model, a.form, x[:a.limit_train], y[:a.limit_train], x_val, y_val, a.epochs, s) for s in a.seeds}
    if a.json:
        a.json.write_text(json.dumps({"keras": tf.keras.__version__ if hasattr(tf.keras, "__version__") else "",
                                      "tensorflow": tf.__version__, "runs": runs}))
    accs = [r["val_accuracy"][-1] for r in runs.values()]
    for s, acc in zip(a.seeds, accs):
        print(f"seed {s}: val_accuracy {acc:.4f}")
    print(f"mean {np.mean(accs):.4f} sd {np.std(accs, ddof=1) if len(accs) > 1 else 0:.4f} (n={len(accs)})")


if __name__ == "__main__":
    main()
