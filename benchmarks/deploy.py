"""Deployment benchmark: every export format against the Keras model, and the server under load.

All numbers are measured in one run, on the same images, on this machine:

1. Exports the run as a SavedModel, LiteRT (float32, float16, dynamic, int8) and ONNX, with
   `transfer.deploy.export.export` (whose own check gives the agreement on all the validation images),
   each in a process of its own: seconds, peak memory (largest resident set), size.
2. Times each model on the same validation images, decoded once (`--limit` of them, `--batch-size`
   at a time, after a warm-up batch): images/s, and the ratio to the Keras model in this run; top-1
   agreement with the Keras model on those images; file size. The SavedModel is fed the files' bytes
   (it decodes them in its graph), so its time includes decoding: the time to decode alone is printed
   beside it.
3. Starts `transfer serve` on one export (`--serve`, default LiteRT int8) on 127.0.0.1 and sends
   `--clients` concurrent clients' requests (one image each, TF Serving's format) for `--seconds`:
   requests/s, p50 and p99 latency, responses by status, and the server's peak RSS (VmHWM).

By default the run is ResNet50 at 224x224 with random backbone weights (ImageNet weights cannot be
downloaded here) and a head trained for 3 epochs on ../shared/data/hymenoptera; `--run DIR` takes any
run instead. With random backbone weights many images are near ties between the two classes, which
is the hard case for quantization's agreement.

Run: .venv/bin/python benchmarks/deploy.py                 (about 10 minutes on 2 CPU cores)
     .venv/bin/python benchmarks/deploy.py --run .demo/lenet --limit 359
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from common import HYMENOPTERA as DATA, ROOT, machine
FORMATS = [  # (name in the tables, format, quantize)
    ("SavedModel", "savedmodel", "none"),
    ("LiteRT float32", "litert", "none"),
    ("LiteRT float16", "litert", "float16"),
    ("LiteRT dynamic", "litert", "dynamic"),
    ("LiteRT int8", "litert", "int8"),
    ("ONNX Runtime", "onnx", "none"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="A run directory; default: train ResNet50 (random backbone) on hymenoptera.")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--limit", type=int, default=64, help="Validation images timed per model.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--serve", default="LiteRT int8", choices=[name for name, _, _ in FORMATS] + ["Keras"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    print(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"Machine: {machine()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}\n")
    with tempfile.TemporaryDirectory(prefix="transfer-deploy-") as work:
        work = Path(work)
        run = args.run or _train(work, args.image_size)
        exports = _export_all(run, work)
        paths = _timing_images(run, args.limit)
        _time_models(run, exports, paths, args.batch_size)
        served = run if args.serve == "Keras" else exports[args.serve]["path"]
        _load_test(served, paths, args.clients, args.seconds)


def _train(work: Path, image_size: int) -> Path:
    from transfer.training.options import TrainOptions
    from transfer.training.train import train

    print(f"Training resnet50 --weights none at {image_size}x{image_size}, 3 epochs, frozen head, on {DATA}")
    options = TrainOptions(backbone="resnet50", weights="none", image_size=image_size, epochs=3, augment=False,
                           val_dir=str(DATA / "val"), seed=0)
    started = time.perf_counter()
    result = train(DATA / "train", work / "run", options, verbose=0)
    print(f"  {time.perf_counter() - started:.0f} s, val_accuracy {result.metrics['val_accuracy']:.3f}\n")
    return result.run_dir


def _export_all(run: Path, work: Path) -> dict[str, dict]:
    print("1. Exports, checked by `transfer export` against the Keras model on every validation image; each in a")
    print("   process of its own, so that its peak memory (the process's largest resident set) is its own")
    print("| export | seconds to write and check | peak memory GiB | size MB | top-1 agreement | images | max probability difference |")
    print("|---|---|---|---|---|---|---|")
    exports = {}
    for name, format, quantize in FORMATS:
        out = work / name.replace(" ", "-")
        started = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", EXPORT_CHILD, str(run), str(out), format, quantize],
                               capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            sys.exit(f"The {name} export failed:\n{child.stderr[-3000:]}")
        done = json.loads(child.stdout.splitlines()[-1])
        exports[name] = {"path": Path(done["path"]), "size": done["size_bytes"]}
        print(f"| {name} | {seconds:.1f} | {done['peak_gib']:.2f} | {done['size_bytes'] / 1e6:.2f} | {done['agreement']:.4f} "
              f"| {done['images_checked']} | {done['max_difference']:.2g} |", flush=True)
    print()
    return exports


#: One export in a fresh process (run, out, format, quantize in argv): its result and peak memory as JSON.
EXPORT_CHILD = """
import json, resource, sys
from transfer.deploy.export import ExportOptions, export
done = export(sys.argv[1], sys.argv[2], ExportOptions(format=sys.argv[3], quantize=sys.argv[4], min_agreement=0))
print(json.dumps({"path": str(done.path), "size_bytes": done.size_bytes, "agreement": done.agreement,
                  "images_checked": done.images_checked, "max_difference": done.max_difference,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def _timing_images(run: Path, limit: int) -> list[str]:
    from transfer.outputs import artifacts

    return artifacts.Run.open(run).validation_images()["path"].tolist()[:limit]


def _time_models(run: Path, exports: dict[str, dict], paths: list[str], batch_size: int) -> None:
    from transfer.data.folders import decode_encoded, iter_decoded_batches
    from transfer.evaluation.scorers import load_scorer

    keras_scorer = load_scorer(run)
    size = keras_scorer.image_size
    pixels = np.concatenate([batch.pixels for batch in iter_decoded_batches(paths, size, 64)])
    contents = [Path(path).read_bytes() for path in paths]
    # Whole batches only: a smaller last batch would make Keras retrace and LiteRT reallocate while timed.
    count = max(batch_size, len(paths) // batch_size * batch_size)
    paths, pixels, contents = paths[:count], pixels[:count], contents[:count]
    batches = [slice(start, start + batch_size) for start in range(0, count, batch_size)]

    def timed(score, inputs) -> tuple[float, np.ndarray]:
        score(inputs[batches[0]])  # warm-up: tracing, allocation
        started = time.perf_counter()
        scores = np.concatenate([score(inputs[batch]) for batch in batches])
        return len(paths) / (time.perf_counter() - started), scores

    reference_speed, reference = timed(keras_scorer.score_pixels, pixels)
    decode_speed, _ = timed(lambda chunk: decode_encoded(list(chunk), size), np.array(contents, dtype=object))
    rows = [("Keras (`model.keras`)", reference_speed, 1.0, None, _size(run / "model.keras"))]
    for name, export in exports.items():
        scorer = load_scorer(export["path"])
        if name == "SavedModel":
            speed, scores = timed(lambda chunk: scorer.score_encoded(list(chunk)), np.array(contents, dtype=object))
            name = "SavedModel (decodes the bytes itself)"
        else:
            speed, scores = timed(scorer.score_pixels, pixels)
        agreement = float(np.mean(scores.argmax(1) == reference.argmax(1)))
        rows.append((name, speed, speed / reference_speed, agreement, export["size"]))
    print(f"2. Speed on {len(paths)} validation images at {size}x{size}, batches of {batch_size}, decoded once "
          f"(decoding alone: {decode_speed:.1f} images/s)")
    print("| model | images/s | ratio to Keras | top-1 agreement with Keras | size MB |")
    print("|---|---|---|---|---|")
    for name, speed, ratio, agreement, size_bytes in rows:
        shown = "-" if agreement is None else f"{agreement:.4f}"
        print(f"| {name} | {speed:.1f} | {ratio:.2f} | {shown} | {size_bytes / 1e6:.2f} |", flush=True)
    print()


def _load_test(model: Path, paths: list[str], clients: int, seconds: float) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "transfer.cli", "serve", str(model), "--port", str(port), "--model-name", "bench"]
    log = tempfile.TemporaryFile("w+")  # not a pipe: a pipe nobody reads could fill and stall the server
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_until_up(server, port, log)
        bodies = [json.dumps({"instances": [{"b64": base64.b64encode(Path(p).read_bytes()).decode()}]}) for p in paths]
        latencies, statuses, errors, lock = [], Counter(), Counter(), threading.Lock()
        deadline = time.monotonic() + seconds

        def client(index: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            sent = index
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    connection.request("POST", "/v1/models/bench:predict", body=bodies[sent % len(bodies)],
                                       headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    response.read()
                except OSError as error:  # counted, and the client connects again
                    with lock:
                        errors[type(error).__name__] += 1
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses[response.status] += 1
                sent += clients
            connection.close()

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        peak = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    milliseconds = sorted(1000 * latency for latency in latencies)
    print(f"3. `transfer serve {model.name}` on 127.0.0.1: {clients} concurrent clients, one image a request, {seconds:g} s")
    print("| requests | requests/s | p50 ms | p99 ms | responses by status | 5xx | connection errors | server peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    p99 = milliseconds[min(len(milliseconds) - 1, int(0.99 * len(milliseconds)))]
    fives = sum(count for status, count in statuses.items() if status >= 500)
    print(f"| {len(milliseconds)} | {len(milliseconds) / elapsed:.1f} | {statistics.median(milliseconds):.0f} | {p99:.0f} "
          f"| {dict(statuses)} | {fives} | {dict(errors) or 0} | {peak:.0f} |")


def _wait_until_up(server: subprocess.Popen, port: int, log, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited: {log.read()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v1/models/bench")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not answer in time")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _size(path: Path) -> int:
    return path.stat().st_size


if __name__ == "__main__":
    main()
