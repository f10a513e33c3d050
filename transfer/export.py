"""`transfer export`: a TensorFlow SavedModel that serves encoded image files.

The `serving_default` signature takes `images`, a 1-D `tf.string` tensor of encoded image files
(JPEG, PNG, BMP, GIF), and returns:

- `labels`: `tf.string [N, k]`, the k most probable class names, most probable first;
- `probabilities`: `float32 [N, k]`, their probabilities;
- `scores`: `float32 [N, classes]`, the full softmax in `labels.txt` order.

Decoding, resizing (`transfer.preprocessing.decode_image`) and the backbone's preprocessing (the
model's own `Preprocess` layer) run inside the graph, and the class names are embedded as a
constant, so serving needs TensorFlow alone. `labels.txt` and the run's `config.json` are copied
beside `saved_model.pb`.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from transfer import outputs
from transfer.errors import InvalidOptionError, ModelLoadError
from transfer.preprocessing import decode_image


def export(run_dir: Path, out_dir: Path, *, top_k: int | None = None, force: bool = False) -> Path:
    """Writes the SavedModel of the run at `run_dir` to `out_dir` and returns `out_dir`.

    Args:
        top_k: labels per image in the `labels`/`probabilities` outputs; default min(3, classes).
        force: replace an existing export at `out_dir`.

    Raises:
        ModelLoadError: `run_dir` is not a complete run.
        OutputExistsError: `out_dir` exists and `force` is not set.
    """
    out_dir = Path(out_dir)
    if (Path(run_dir) / outputs.SAVED_MODEL).is_file():
        raise ModelLoadError(f"{run_dir} is already an exported SavedModel; export takes a run directory.")
    outputs.check_destination(out_dir, force)
    run = outputs.Run.open(run_dir)
    class_names = run.labels()
    classes = len(class_names)
    k = min(3, classes) if top_k is None else top_k
    if not 1 <= k <= classes:
        raise InvalidOptionError(f"--top-k must be between 1 and {classes} (the classes); received {k}.")

    model = run.load_model()
    size = int(model.input_shape[1])
    labels = tf.constant(class_names)

    def serve(images):
        pixels = tf.map_fn(
            lambda contents: decode_image(contents, size),
            images,
            fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32),
        )
        scores = tf.cast(model(pixels, training=False), tf.float32)
        top = tf.math.top_k(scores, k=k)
        return {"labels": tf.gather(labels, top.indices), "probabilities": top.values, "scores": scores}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", serve, input_signature=[tf.TensorSpec([None], tf.string, name="images")]
    )
    staging = outputs.staging_dir(out_dir)
    archive.write_out(str(staging), verbose=False)
    outputs.Export(staging).write_metadata(run)
    outputs.publish(staging, out_dir)
    return out_dir
