"""Looking inside a trained model: first-layer filters, feature maps and Grad-CAM heatmaps.

`transfer visualize RUN_DIR` writes the first convolution layer's filters as an image grid and the
feature maps of chosen layers for one image, as in the lecture notes' visualization chapter.
`grad_cam` (Selvaraju et al., 2017) weights the last convolutional feature maps by the gradient
of the class score averaged over space, keeps the positive part and scales it to [0, 1]: where
the model looked. `transfer report` shows it over validation images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from transfer.outputs import artifacts, layout, publishing
from transfer.models.registry import run_backbone
from transfer.core.errors import DataError, InvalidOptionError
from transfer.outputs.figures import plot_image_grid
from transfer.models.saving import load_run_model, run_transfers

if TYPE_CHECKING:  # TensorFlow is imported when the work starts, after every check
    import keras


def visualize(
    run_dir: Path,
    out_dir: Path | None = None,
    *,
    image: Path | None = None,
    layers: Sequence[str] = (),
    force: bool = False,
) -> list[Path]:
    """Writes `filters.png` and `feature_maps_<layer>.png` to `out_dir` (default RUN_DIR/visualize).

    Args:
        image: the input for the feature maps; default the run's first validation image.
        layers: backbone layers to show; default the first and the last convolutional layers.

    Returns:
        The PNG files written.
    """
    run = artifacts.Run.open(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run.path / layout.VISUALIZATION
    publishing.check_destination(out_dir, kind="visualization", force=force, data=tuple(artifacts.data_folders(run.path)))
    if image is not None and not Path(image).exists():
        raise DataError(f"--image {image} does not exist; pass the path of one image.")
    if image is not None and not Path(image).is_file():
        raise DataError(f"--image {image} is a folder, not an image file; pass the path of one image.")
    spec = run_backbone(run.config())
    _check_layers(run, spec, layers)  # from the model file's description: before the model is loaded
    import keras

    model = load_run_model(run)
    backbone = model.get_layer(spec.name)
    convolutions = [layer for layer in _layers(backbone) if isinstance(layer, keras.layers.Conv2D)]
    names = list(layers) or list(dict.fromkeys([convolutions[0].name, convolutions[-1].name]))
    known = {layer.name: layer for layer in _layers(backbone)}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidOptionError(
            f"--layers: {', '.join(unknown)} not in {spec.label}. Convolution layers: "
            f"{', '.join(layer.name for layer in convolutions[:40])}{', ...' if len(convolutions) > 40 else ''}."
        )
    image_path = str(image) if image else _first_validation_image(run)
    pixels = _decode_one(image_path, int(model.input_shape[1]))

    with publishing.staged(out_dir, "visualization") as staging:
        written = [staging / layout.FILTERS_PNG]
        filters, titles = first_layer_filters(convolutions[0], bgr=spec.preprocess_mode == "caffe")
        plot_image_grid(filters, titles, written[0], columns=8, cmap="gray",
                        title=f"{spec.label}: the {len(filters)} filters of {convolutions[0].name}")
        maps = feature_maps(model, spec.name, pixels[None], names)
        for name, activation in zip(names, maps):
            channels = activation[0]
            shown = min(channels.shape[-1], 32)
            scaled = [_unit(channels[..., c]) for c in range(shown)]
            written.append(staging / layout.feature_maps_png(name))
            plot_image_grid(scaled, [f"{c}" for c in range(shown)], written[-1], columns=8, cmap="viridis",
                            title=f"{name}: {shown} of {channels.shape[-1]} feature maps for {Path(image_path).name}")
    return [out_dir / path.name for path in written]


def first_layer_filters(layer: keras.layers.Conv2D, bgr: bool = False) -> tuple[list[np.ndarray], list[str]]:
    """The kernels of a convolution as images scaled to [0, 1] each: colour for 3 input channels
    (`bgr`: the backbone reads BGR, as the caffe-mode ResNet50 and VGG16 do), else the mean over
    input channels (gray)."""
    import keras

    kernel = keras.ops.convert_to_numpy(layer.kernel)  # [h, w, in, out]
    images = []
    for index in range(min(kernel.shape[-1], 64)):
        weights = kernel[..., index]
        if weights.shape[-1] == 3:
            images.append(_unit(weights[..., ::-1] if bgr else weights))
        else:
            images.append(_unit(weights.mean(axis=-1)))
    return images, [str(i) for i in range(len(images))]


def feature_maps(model: keras.Model, backbone_name: str, pixels: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
    """Activations of the named backbone layers for decoded `pixels` (inference mode)."""
    import keras

    backbone = model.get_layer(backbone_name)
    probe = keras.Model(backbone.inputs, [backbone.get_layer(name).output for name in names])
    outputs = probe(model.get_layer("preprocess")(pixels), training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(output) for output in outputs]


def grad_cam(model: keras.Model, backbone_name: str, pretrained: bool, pixels: np.ndarray,
             classes: Sequence[int]) -> np.ndarray:
    """Grad-CAM heatmaps `[N, H, W]` in [0, 1] at the input size, for class `classes[i]` of image i.

    The feature maps are the backbone's output for pretrained backbones (the head pools them) and,
    for the from-scratch baselines, those of the last layer whose output is larger than 1x1.
    """
    import keras
    import tensorflow as tf

    backbone = model.get_layer(backbone_name)
    x = model.get_layer("preprocess")(tf.constant(pixels))
    if pretrained:
        from transfer.models.classifier import pooling_layer

        head, pool = model.get_layer("head"), pooling_layer(model)
        with tf.GradientTape() as tape:
            maps = backbone(x, training=False)
            tape.watch(maps)
            chosen = tf.gather(head(pool(maps), training=False), list(classes), axis=1, batch_dims=1)
    else:
        spatial = [  # the last feature maps that still have a spatial extent (LeNet's C5 is 1x1)
            layer for layer in _layers(backbone)
            if len(layer.output.shape) == 4 and layer.output.shape[1] * layer.output.shape[2] > 1
        ]
        probe = keras.Model(backbone.inputs, [spatial[-1].output, backbone.output])
        with tf.GradientTape() as tape:
            maps, probabilities = probe(x, training=False)
            chosen = tf.gather(probabilities, list(classes), axis=1, batch_dims=1)
    gradients = tape.gradient(chosen, maps)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))[..., None]
    cam = tf.image.resize(cam, pixels.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0)


def overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An image ([0, 255]) with a heatmap ([0, 1]) blended over it in the jet colormap, in [0, 1]."""
    from matplotlib import colormaps

    colored = colormaps["jet"](heatmap)[..., :3]
    return np.clip((1 - alpha) * pixels / 255.0 + alpha * colored, 0, 1)


def _layers(model: keras.Model) -> list[keras.Layer]:
    import keras

    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _unit(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values, dtype=np.float32)


def _check_layers(run: artifacts.Run, spec, layers: Sequence[str]) -> None:
    """Refuses `--layers` the backbone does not have, naming the closest of its layers.

    Raises:
        InvalidOptionError: a name that is not one of the backbone's layers.
    """
    import difflib

    known = run.layer_names(spec.name)
    unknown = [name for name in layers if known and name not in known]
    if unknown:
        close = [match for name in unknown for match in difflib.get_close_matches(name, known, n=3, cutoff=0.5)]
        raise InvalidOptionError(
            f"--layers: {', '.join(unknown)} {'is not a layer' if len(unknown) == 1 else 'are not layers'} of {spec.label} ({len(known)} layers, from {known[0]} to "
            f"{known[-1]})" + (f"; the closest: {', '.join(dict.fromkeys(close))}." if close else
                               f"; its layers include {', '.join(_spread(known, 6))}.")
        )


def _spread(names: list[str], count: int) -> list[str]:
    """`count` names spread evenly over `names`, first and last included."""
    if len(names) <= count:
        return names
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)]


def _first_validation_image(run: artifacts.Run) -> str:
    if (run.path / layout.SPLIT).is_file() and len(run.validation_images()):
        return run.validation_images()["path"].iloc[0]
    raise DataError(f"{run.path} has no validation images listed in {layout.SPLIT}; pass --image PATH.")


def _decode_one(path: str, size: int) -> np.ndarray:
    from transfer.data.folders import iter_decoded_batches

    batch = next(iter_decoded_batches([path], size, 1))  # one file: one batch, decoded or failed
    if batch.failed:
        raise DataError(f"Cannot read {path}: {batch.failed[0][1]}")
    return batch.pixels[0]


def gradcam_figure(run: artifacts.Run, config: dict, evaluation, count: int, path: Path) -> str:
    """The report's Grad-CAM section: `count` of `evaluation`'s images spread over the classes, each with the
    heatmap of its predicted class (a multi-label model's most probable label), drawn to `path`."""
    if count <= 0:
        return "<p>Not requested.</p>"
    from transfer.data.folders import iter_decoded_batches
    from transfer.reports import pages

    spec, transfers = run_backbone(config), run_transfers(config)
    model = load_run_model(run)
    chosen = _spread_over_classes(evaluation.examples, count)
    pixels = np.concatenate([b.pixels for b in iter_decoded_batches(chosen["path"].tolist(), int(model.input_shape[1]), 32)])
    index = {name: i for i, name in enumerate(evaluation.class_names)}
    if evaluation.multi_label:  # the most probable label of each image
        position = {path: i for i, path in enumerate(evaluation.examples["path"])}
        targets = [int(evaluation.scores[position[path]].argmax()) for path in chosen["path"]]
    else:
        targets = [index[p] for p in chosen["predicted"]]
    heatmaps = grad_cam(model, spec.name, transfers, pixels, targets)
    images = [overlay(p, h) for p, h in zip(pixels, heatmaps)]
    titles = [f"true {r.label}\npred {r.predicted} {r.confidence:.2f}" for r in chosen.itertuples()]
    plot_image_grid(images, titles, path, columns=4, size=2.4)
    return (
        pages.image(path, "Grad-CAM heatmaps")
        + "<p>Red: the regions that raised the score of the predicted class most (Grad-CAM on "
        + ("the backbone's last feature maps" if transfers else "the last convolutional feature maps")
        + ").</p>"
    )


def _spread_over_classes(examples, count: int):
    """Up to `count` rows taking the classes in turn, in their order."""
    ranked = examples.assign(rank=examples.groupby("label").cumcount())
    return ranked.sort_values(["rank", "label"], kind="stable").head(count)
