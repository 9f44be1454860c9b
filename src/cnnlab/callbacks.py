"""Keras' callbacks for ``cnnlab.train`` and the engine's fit loop: ``from cnnlab.callbacks import EarlyStopping``.

The same names, arguments and decisions as ``keras.callbacks``; they can stop a run and steer its
learning rate, and their state is checkpointed so a resumed run decides as an uninterrupted one
(``engine/callbacks.py`` has the details).
"""
from .engine.callbacks import (CSVLogger, Callback, EarlyStopping, LambdaCallback, LearningRateScheduler,
                               ModelCheckpoint, ReduceLROnPlateau, TensorBoard)

__all__ = ["CSVLogger", "Callback", "EarlyStopping", "LambdaCallback", "LearningRateScheduler", "ModelCheckpoint",
           "ReduceLROnPlateau", "TensorBoard"]
