"""`transfer export`: a TensorFlow SavedModel that serves encoded image files.

The `serving_default` signature takes `images`, a 1-D `tf.string` tensor of encoded image files
(JPEG, PNG, BMP, GIF, WebP), and returns:

- `labels`: `tf.string [N, k]`, the k most probable class names, most probable first;
- `probabilities`: `float32 [N, k]`, their probabilities;
- `scores`: `float32 [N, classes]`, the full softmax in `labels.txt` order.

Decoding, resizing (`transfer.preprocessing.decode_image`) and the backbone's preprocessing (the
model's own `Preprocess` layer) run inside the graph, and the class names are embedded as a
constant, so serving needs TensorFlow alone. `labels.txt` and the run's `config.json` are copied
beside `saved_model.pb`. An empty batch gets empty outputs; a file that is not an image in a
known format fails the call with an error naming its index (`images[3] is not ...`).
"""

from __future__ import annotations

from pathlib import Path

from transfer import outputs
from transfer.errors import ModelLoadError
from transfer.imagenet import ImageNetClassifier, is_imagenet
from transfer.options import require
from transfer.prediction import resolve_top_k


def export(
    run_dir: Path | str, out_dir: Path, *, top_k: int | None = None, force: bool = False, weights: str | None = None
) -> Path:
    """Writes the SavedModel of the run at `run_dir` (or of `imagenet:NAME`) to `out_dir` and
    returns `out_dir`.

    Args:
        weights: for `imagenet:NAME`, its `include_top` weights file; `None` lets Keras download them.
        top_k: labels per image in the `labels`/`probabilities` outputs; default min(3, classes).
        force: replace an earlier export at `out_dir`.

    Raises:
        ModelLoadError: `run_dir` is not a complete run.
        OutputExistsError: something is at `out_dir` (`force` replaces only an earlier export).
        InvalidOptionError: `top_k` out of range.
    """
    out_dir = Path(out_dir)
    if (Path(run_dir) / outputs.SAVED_MODEL).is_file():
        raise ModelLoadError(f"{run_dir} is already an exported SavedModel; export takes a run directory.")
    if is_imagenet(run_dir):
        run = ImageNetClassifier.open(run_dir, weights)
    else:
        require(weights is None, "--weights", weights, "given only with imagenet:NAME (a run has its own)")
        run = outputs.Run.open(run_dir)
    class_names = run.labels()
    k = resolve_top_k(top_k, len(class_names))
    outputs.check_destination(out_dir, kind="export", force=force)

    import keras
    import tensorflow as tf

    from transfer.preprocessing import decode_image, is_image_format

    model = run.load_model()
    size, classes = int(model.input_shape[1]), len(class_names)
    labels = tf.constant(class_names)

    def decode(indexed):
        index, contents = indexed
        known = tf.debugging.Assert(is_image_format(contents), [tf.strings.format(
            "images[{}] is not a JPEG, PNG, GIF, BMP or WebP file", index
        )])
        with tf.control_dependencies([known]):
            return decode_image(contents, size)

    def classify(images):
        indices = tf.range(tf.size(images, out_type=tf.int64))
        pixels = tf.map_fn(decode, (indices, images), fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32))
        scores = tf.cast(model(pixels, training=False), tf.float32)
        top = tf.math.top_k(scores, k=k)
        return {"labels": tf.gather(labels, top.indices), "probabilities": top.values, "scores": scores}

    def serve(images):
        nothing = {  # an empty batch gets empty answers of the same shapes
            "labels": tf.zeros([0, k], tf.string), "probabilities": tf.zeros([0, k]), "scores": tf.zeros([0, classes]),
        }
        return tf.cond(tf.size(images) > 0, lambda: classify(images), lambda: nothing)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", serve, input_signature=[tf.TensorSpec([None], tf.string, name="images")]
    )
    with outputs.staged(out_dir, "export") as staging:
        archive.write_out(str(staging), verbose=False)
        outputs.Export(staging).write_metadata(class_names, run.config())
    return out_dir
