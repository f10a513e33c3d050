"""Choosing the `tf.distribute` strategy a run is built, compiled and trained under.

Several machines use TensorFlow's own runtime: `MultiWorkerMirroredStrategy`, configured by the
standard `TF_CONFIG` environment variable (the cluster's workers as `host:port`, and this
process's `task`). Every worker runs the same `transfer train` command; the chief (task `chief`,
or worker 0 when there is no chief) writes the run directory, and the others write to their own
temporary folders, removed when training ends.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from transfer.core.errors import InvalidOptionError

if TYPE_CHECKING:  # TensorFlow is imported where a strategy is made: options read the cluster without it
    import tensorflow as tf

#: `tf.distribute` strategies (see `transfer.training.distribute.resolve_strategy`).
STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def cluster_task() -> tuple[str, int, dict] | None:
    """`(task_type, task_index, cluster)` from `TF_CONFIG`, or `None` when it is not set.

    Raises:
        InvalidOptionError: `TF_CONFIG` is not JSON with a `cluster` of `host:port` lists and a
            `task` naming one of its members.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    example = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, index = str(task["type"]), int(task["index"])
        members = cluster[task_type]
    except (ValueError, KeyError, TypeError):
        members, index = None, -1
    if not isinstance(members, list) or not 0 <= index < len(members):
        raise InvalidOptionError(
            f"TF_CONFIG is not a valid cluster description; received {text[:300]!r}. Expected JSON like "
            f"{example}, with this machine's entry named by task.type and task.index."
        )
    return task_type, index, cluster


def worker_index() -> int | None:
    """This process's index among the non-chief workers, or `None` for the chief (or no cluster).

    The chief is the `chief` task, or worker 0 when the cluster has no `chief`, as in TensorFlow.
    """
    task = cluster_task()
    if task is None:
        return None
    task_type, index, cluster = task
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
    return None if is_chief else index


def resolve_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Returns the strategy for `name`.

    - `auto`: `MultiWorkerMirroredStrategy` when `TF_CONFIG` is set; else `MirroredStrategy` over
      all GPUs when more than one is visible; else the default strategy (one device).
    - `default`: the default strategy (one device).
    - `mirrored`: `MirroredStrategy` over all GPUs, or over all logical CPU devices when there is
      no GPU (one CPU unless more were configured with `tf.config.set_logical_device_configuration`).
    - `multiworker`: `MultiWorkerMirroredStrategy` over the cluster in `TF_CONFIG` (required).

    Batches given to a model trained under the strategy are global: per-replica batch size times
    `strategy.num_replicas_in_sync` (all replicas of all workers).

    Raises:
        InvalidOptionError: `multiworker` without `TF_CONFIG`, or a malformed `TF_CONFIG`.
    """
    import tensorflow as tf

    if name == "multiworker" or (name == "auto" and os.environ.get("TF_CONFIG")):
        if cluster_task() is None:  # also validates TF_CONFIG, with a clear message
            raise InvalidOptionError(
                "--strategy multiworker needs the cluster in the TF_CONFIG environment variable, and "
                "TF_CONFIG is not set. See docs/multiworker.md (\"Several machines\")."
            )
        return _multi_worker_strategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(gpus or cpus)
    raise InvalidOptionError(f"--strategy must be one of {', '.join(STRATEGIES)}; received {name!r}.")


def _multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """TensorFlow's `MultiWorkerMirroredStrategy`, with a `reduce` that takes what Keras 3's `fit`
    gives it (`_MultiWorkerMirroredStrategy`, defined here so that TensorFlow is imported only now)."""
    import tensorflow as tf

    class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """`MultiWorkerMirroredStrategy` with a `reduce` that takes what Keras 3's `fit` gives it.

        Keras 3 (3.15) calls `reduce` in two ways the multi-worker strategy rejects, though
        `MirroredStrategy` accepts them: on the first `(x, y)` batch as one nested structure (to build
        the model), and on scalar per-replica metrics with `axis=0` (to average the logs). This reduces
        each value of a structure on its own, and scalars across replicas without an axis, which is
        what Keras means in both cases.
        """

        def reduce(self, reduce_op, value, axis):
            parent = super(_MultiWorkerMirroredStrategy, self)

            def one(item):
                local = item.values[0] if isinstance(item, tf.distribute.DistributedValues) else item
                scalar = getattr(local, "shape", None) is not None and local.shape.rank == 0
                return parent.reduce(reduce_op, item, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return _MultiWorkerMirroredStrategy()


def min_across_workers(strategy: tf.distribute.Strategy, value: int) -> int:
    """The smallest of the `value`s every replica of every worker passes (a collective: all call it)."""
    import tensorflow as tf


    @tf.function
    def gather():
        return tf.distribute.get_replica_context().all_gather(tf.constant([value], tf.int64), axis=0)

    gathered = strategy.run(gather)
    return int(tf.reduce_min(strategy.experimental_local_results(gathered)[0]))


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """`"default"` for the one-device default strategy, else the class name (`"MirroredStrategy"`)."""
    import tensorflow as tf

    if strategy is tf.distribute.get_strategy():
        return "default"
    return "MultiWorkerMirroredStrategy" if is_multi_worker(strategy) else type(strategy).__name__


def describe(strategy: tf.distribute.Strategy) -> str:
    """`"MirroredStrategy, 2 replicas"` or `"default, 1 replica"`; workers named under TF_CONFIG."""
    replicas = strategy.num_replicas_in_sync
    text = f"{strategy_name(strategy)}, {replicas} replica{'s' if replicas > 1 else ''}"
    task = cluster_task() if is_multi_worker(strategy) else None
    if task:
        workers = sum(len(members) for members in task[2].values() if isinstance(members, list))
        role = "chief" if worker_index() is None else "non-chief"
        text += f" on {workers} workers (this is {task[0]} {task[1]}, the {role})"
    return text
