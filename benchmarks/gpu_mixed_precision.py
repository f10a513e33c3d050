"""Mixed-precision throughput benchmark for the model `transfer` trains.

Model: keras.applications.ResNet50(include_top=False, weights=None) -> GlobalAveragePooling2D ->
Dense(2, softmax, dtype="float32") (the float32 softmax that Keras' mixed-precision guide asks
for), compiled with Adam(1e-4) and sparse_categorical_crossentropy, jit_compile left at its
default. For each dtype policy it times `train_on_batch` and `predict_on_batch` on random data
held as numpy arrays; both return numpy values, so each timed call waits for the device.

Standalone: it does not import the `transfer` package, so it runs wherever Keras 3 and one
backend are installed (e.g. KERAS_BACKEND=jax on a GPU machine that has no TensorFlow).

Run (quick CPU check): .venv/bin/python benchmarks/gpu_mixed_precision.py \
    --image-size 64 --batch-size 4 --steps 2 --warmup 1 --policies float32,mixed_float16
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30, help="timed calls per policy and mode")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first (compilation)")
    p.add_argument("--policies", default="float32,mixed_float16,mixed_bfloat16")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def device_description(keras):
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return f"jax {jax.__version__}: {jax.devices()}"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"tensorflow {tf.__version__}: {gpus or tf.config.list_physical_devices('CPU')}"
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"torch {torch.__version__}: cuda {torch.cuda.get_device_name(0)}"
            return f"torch {torch.__version__}: cpu"
    except Exception as exc:  # pragma: no cover - informational only
        return f"{backend}: unknown ({exc!r})"
    return backend


def build_model(keras, image_size):
    backbone = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3)
    )
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    # Output layer kept in float32 so softmax and the loss are computed in full precision.
    out = keras.layers.Dense(2, activation="softmax", dtype="float32")(x)
    model = keras.Model(backbone.input, out)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss="sparse_categorical_crossentropy",
    )
    return model


def time_calls(fn, steps):
    """Runs fn() steps times; returns (seconds total, per-call seconds list, last result)."""
    per_call = []
    result = None
    t_all = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        result = fn()  # returns numpy: waits for the device
        per_call.append(time.perf_counter() - t0)
    return time.perf_counter() - t_all, per_call, result


def bench_policy(keras, policy, args, images, labels):
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(keras, args.image_size)
        compute_dtype = model.layers[-2].dtype_policy.compute_dtype  # GAP layer
        opt_name = type(model.optimizer).__name__

        def train():
            return model.train_on_batch(images, labels)

        def infer():
            return model.predict_on_batch(images)

        t0 = time.perf_counter()
        first_loss = train()
        first_train_s = time.perf_counter() - t0
        for _ in range(max(args.warmup - 1, 0)):
            train()
        train_s, train_calls, loss = time_calls(train, args.steps)

        t0 = time.perf_counter()
        infer()
        first_infer_s = time.perf_counter() - t0
        for _ in range(max(args.warmup - 1, 0)):
            infer()
        infer_s, infer_calls, preds = time_calls(infer, args.steps)

        loss = float(np.asarray(loss).reshape(-1)[0])
        scale = getattr(model.optimizer, "dynamic_scale", None)
        scale = float(np.asarray(keras.ops.convert_to_numpy(scale))) if scale is not None else None
        n = args.batch_size * args.steps
        return {
            "policy": policy,
            "compute_dtype": compute_dtype,
            "optimizer": opt_name,
            "train_ips": n / train_s,
            "infer_ips": n / infer_s,
            "train_ms_median": 1000 * float(np.median(train_calls)),
            "infer_ms_median": 1000 * float(np.median(infer_calls)),
            "first_train_s": first_train_s,
            "first_infer_s": first_infer_s,
            "first_loss": float(np.asarray(first_loss).reshape(-1)[0]),
            "loss": loss,
            "finite": bool(np.isfinite(loss) and np.all(np.isfinite(np.asarray(preds)))),
            "loss_scale": scale,
            "error": None,
        }
    except Exception as exc:
        return {"policy": policy, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def main(argv=None):
    args = parse_args(argv)
    import keras

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    print(f"date:    {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
    print(f"python:  {platform.python_version()} on {platform.node()}")
    print(f"backend: {keras.backend.backend()}  keras {keras.__version__}")
    print(f"device:  {device_description(keras)}")
    print(
        f"model:   ResNet50(weights=None) + GAP + Dense(2, softmax, float32), Adam(1e-4); "
        f"batch {args.batch_size}, image {args.image_size}, warmup {args.warmup}, "
        f"timed steps {args.steps}"
    )
    sys.stdout.flush()

    rng = np.random.default_rng(args.seed)
    images = rng.uniform(0, 255, (args.batch_size, args.image_size, args.image_size, 3)).astype(
        "float32"
    )
    labels = rng.integers(0, 2, (args.batch_size,)).astype("int32")

    results = []
    for policy in policies:
        r = bench_policy(keras, policy, args, images, labels)
        results.append(r)
        if r["error"]:
            print(f"[{policy}] FAILED: {r['error']}")
        else:
            print(
                f"[{policy}] compute {r['compute_dtype']}, optimizer {r['optimizer']}; "
                f"first train call {r['first_train_s']:.1f}s, first predict {r['first_infer_s']:.1f}s; "
                f"median step train {r['train_ms_median']:.1f} ms, predict {r['infer_ms_median']:.1f} ms; "
                f"loss first {r['first_loss']:.4f} last {r['loss']:.4f}"
                + (f"; loss scale now {r['loss_scale']:g}" if r["loss_scale"] is not None else "")
            )
        sys.stdout.flush()

    base = next((r for r in results if r["policy"] == "float32" and not r["error"]), None)
    print()
    header = (
        f"{'policy':<16}{'train img/s':>13}{'infer img/s':>13}"
        f"{'train x f32':>13}{'infer x f32':>13}  loss finite"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if r["error"]:
            print(f"{r['policy']:<16}{'failed':>13}{'failed':>13}{'-':>13}{'-':>13}  -")
            continue
        tr = f"{r['train_ips'] / base['train_ips']:.2f}" if base else "-"
        ir = f"{r['infer_ips'] / base['infer_ips']:.2f}" if base else "-"
        print(
            f"{r['policy']:<16}{r['train_ips']:>13.1f}{r['infer_ips']:>13.1f}"
            f"{tr:>13}{ir:>13}  {'yes' if r['finite'] else 'no'}"
        )
    sys.stdout.flush()
    return 0 if all(not r["error"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
