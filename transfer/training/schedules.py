"""Learning rate over a stage's steps: `constant`, `cosine` and `onecycle` (`transfer.training.options.SCHEDULES`).

- `constant`: the stage's rate at every step.
- `cosine`: Keras' `CosineDecay` from the rate to 1% of it over the stage (SGDR without restarts).
- `onecycle`: fastai's `fit_one_cycle`: the first quarter of the steps warms up from rate / 25 to
  the rate along a half cosine, the rest anneals to rate / 100000 along another (Smith, "Super-
  convergence", 2018, with fastai's cosine phases).

A stage that stops early ends wherever its schedule is then. The optimizer's step counter is part
of each epoch's backup, so a resumed stage goes on from the rate it had reached.
"""

from __future__ import annotations

import math

import keras

#: `cosine` ends at this share of the rate.
COSINE_FLOOR = 0.01
#: `onecycle`: the share of steps warming up, the starting divisor and the final divisor (fastai's).
ONECYCLE_WARMUP, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.25, 25.0, 1e5


def make_schedule(name: str, rate: float, steps: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate (a number, or a schedule of the optimizer's step) of a stage of `steps` steps."""
    if name == "constant":
        return rate
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(1, steps), alpha=COSINE_FLOOR)
    if name == "onecycle":
        return OneCycle(rate, steps)
    raise ValueError(f"unknown schedule {name!r}")


def cosine_between(start: float, end: float, fraction):
    """From `start` at 0 to `end` at 1 along a half cosine (works on numbers and tensors)."""
    return end + (start - end) * (1 + keras.ops.cos(math.pi * fraction)) / 2


@keras.saving.register_keras_serializable(package="transfer")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """fastai's one-cycle schedule with its defaults (see the module docstring); `rate` is the peak."""

    def __init__(self, rate: float, steps: int, warmup: float = ONECYCLE_WARMUP):
        self.rate, self.steps, self.warmup = float(rate), int(max(1, steps)), float(warmup)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = max(1.0, self.warmup * self.steps)
        rising = cosine_between(self.rate / ONECYCLE_DIV, self.rate, keras.ops.minimum(step / warm, 1.0))
        falling_fraction = keras.ops.clip((step - warm) / max(1.0, self.steps - warm), 0.0, 1.0)
        falling = cosine_between(self.rate, self.rate / ONECYCLE_FINAL_DIV, falling_fraction)
        return keras.ops.where(step < warm, rising, falling)

    def get_config(self):
        return {"rate": self.rate, "steps": self.steps, "warmup": self.warmup}
