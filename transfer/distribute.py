"""Choosing the `tf.distribute` strategy a run is built, compiled and trained under."""

from __future__ import annotations

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored")


def resolve_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Returns the strategy for `name`.

    - `auto`: `MirroredStrategy` over all GPUs when more than one is visible, else the default
      strategy (one device).
    - `default`: the default strategy (one device).
    - `mirrored`: `MirroredStrategy` over all GPUs, or over all logical CPU devices when there is
      no GPU (one CPU unless more were configured with `tf.config.set_logical_device_configuration`).

    Batches given to a model trained under the strategy are global: per-replica batch size times
    `strategy.num_replicas_in_sync`.
    """
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(gpus or cpus)
    raise ValueError(f"strategy must be one of {STRATEGIES}, received {name!r}")


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """`"default"` for the one-device default strategy, else the class name (`"MirroredStrategy"`)."""
    return "default" if strategy is tf.distribute.get_strategy() else type(strategy).__name__


def describe(strategy: tf.distribute.Strategy) -> str:
    """`"MirroredStrategy, 2 replicas"` or `"default, 1 replica"`."""
    replicas = strategy.num_replicas_in_sync
    return f"{strategy_name(strategy)}, {replicas} replica{'s' if replicas > 1 else ''}"
