"""The open-set detector inside the model: a classifier that answers its probabilities and, beside
them, how far each image lies from the images it was trained on ("none of these").

    image [0, 255] -> preprocess -> backbone -> features -> head -> [temperature] -> scores
                                                    \\-> novelty (NoveltyScore)      -> novelty

`with_novelty` builds that model from a trained classifier and a fitted
`transfer.metrics.novelty.NoveltyDetector`; its `NoveltyScore` layer holds the detector's arrays as
constant weights and computes the score with matrix products, a top-k and a square root, which
every runtime a run is exported to runs (TensorFlow, LiteRT, ONNX Runtime). So a SavedModel, LiteRT
or ONNX file carries its detector and needs nothing beside it; the threshold travels in its
`config.json` and, for the SavedModel, in the graph's `answer`.

The features are the classifier's own (`feature_tensors`): a backbone under a head gives its pooled
output (after fine-tuning, the fine-tuned backbone's); a from-scratch baseline its layers up to the
registry's `feature_layer`, flattened, as `transfer.training.features.frozen_extractor` defines them.
The run's `model.keras` stays the plain classifier; `novelty.npz` beside it holds the detector.
"""

from __future__ import annotations

import keras
import numpy as np

from transfer.models.registry import BackboneSpec

#: The novelty scores computed in the graph (the feature-space ones of `transfer.metrics.novelty`).
GRAPH_METHODS = ("knn", "mahalanobis", "mahalanobis_l2")
#: The outputs of `with_novelty`'s model.
SCORES, NOVELTY = "scores", "novelty"


@keras.saving.register_keras_serializable(package="transfer")
class NoveltyScore(keras.layers.Layer):
    """Pooled features `[N, D]` -> novelty scores `[N]` (float32), as `transfer.metrics.novelty.method_scores`:

    - `knn`: the distance of the L2-normalised features to their k-th nearest row of `bank` (rows
      already normalised); a zero feature lies at distance 1.
    - `mahalanobis` (and `mahalanobis_l2` on normalised features): the smallest squared Mahalanobis
      distance to a class mean under `precision`, computed as the squared length of
      `(x - mean_c) @ cholesky(precision)`, which stays exact in float32 where expanding the
      quadratic form would cancel.
    """

    def __init__(self, method: str, k: int = 1, arrays: dict[str, np.ndarray] | None = None,
                 shapes: dict[str, list[int]] | None = None, **kwargs):
        super().__init__(**kwargs)
        if method not in GRAPH_METHODS:
            raise ValueError(f"Unknown graph novelty method {method!r}; expected one of {', '.join(GRAPH_METHODS)}.")
        self.method, self.k = method, int(k)
        arrays = _graph_arrays(method, arrays) if arrays is not None else None
        self.shapes = {name: list(value.shape) for name, value in arrays.items()} if arrays is not None else dict(shapes)
        self.tables = {
            name: self.add_weight(name=name, shape=tuple(shape), trainable=False, dtype="float32",
                                  initializer="zeros" if arrays is None else keras.initializers.Constant(arrays[name].astype(np.float32)))
            for name, shape in self.shapes.items()
        }

    def call(self, features):
        ops = keras.ops
        features = ops.cast(features, "float32")
        if self.method in ("knn", "mahalanobis_l2"):
            norms = ops.sqrt(ops.sum(ops.square(features), axis=-1, keepdims=True))
            unit = features / ops.maximum(norms, 1e-12)
        if self.method == "knn":
            similarity = ops.matmul(unit, ops.transpose(self.tables["bank"]))
            # k = 1 (a bank under 1,500 images) is a max: LiteRT's int8 converter quantizes a top-k whatever it is told
            nearest = ops.max(similarity, axis=-1) if self.k == 1 else ops.top_k(similarity, self.k, sorted=True)[0][:, self.k - 1]
            distance = ops.sqrt(ops.maximum(2.0 - 2.0 * nearest, 0.0))
            return ops.where(norms[:, 0] > 0, distance, ops.ones_like(distance))
        x = unit if self.method == "mahalanobis_l2" else features
        whitened = ops.matmul(x, self.tables["cholesky"])  # [N, D]
        gaps = ops.expand_dims(whitened, 1) - ops.expand_dims(self.tables["whitened_means"], 0)  # [N, classes, D]
        return ops.min(ops.sum(ops.square(gaps), axis=-1), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self) -> dict:
        return {**super().get_config(), "method": self.method, "k": self.k, "shapes": self.shapes}


def _graph_arrays(method: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The layer's constant tables from a detector's `state`: the bank, or the Cholesky factor L of
    the precision (precision = L L^T, so (x - m)^T P (x - m) = |(x - m) L|^2) and the means times L."""
    if method == "knn":
        return {"bank": np.asarray(state["bank"], np.float64)}
    cholesky = np.linalg.cholesky(np.asarray(state["precision"], np.float64))
    return {"cholesky": cholesky, "whitened_means": np.asarray(state["means"], np.float64) @ cholesky}


def feature_tensors(model: keras.Model, spec: BackboneSpec, transfers: bool, inputs) -> tuple:
    """`(scores, features)`: `model`'s layers called again on `inputs`, leaving out the augmentation
    block (inference only), giving its probabilities (after its temperature, where it has one) and
    its features in one pass."""
    from transfer.models.classifier import pooling_layer

    names = {layer.name for layer in model.layers}
    x = model.get_layer("preprocess")(inputs)
    if transfers:
        features = pooling_layer(model)(model.get_layer(spec.name)(x, training=False))
        scores = model.get_layer("head")(features, training=False)
    else:  # the baseline's own graph, with its feature layer as a second output
        baseline = model.get_layer(spec.name)
        both = keras.Model(baseline.inputs, [baseline.outputs[0], baseline.get_layer(spec.feature_layer).output])
        scores, maps = both(x, training=False)
        features = keras.layers.Flatten(name="flatten_features")(maps)
    if "temperature" in names:
        scores = model.get_layer("temperature")(scores)
    return scores, features


def with_novelty(model: keras.Model, spec: BackboneSpec, transfers: bool, detector) -> keras.Model:
    """`{"scores": [N, classes], "novelty": [N]}` of `model` and the fitted `detector`
    (`transfer.metrics.novelty.NoveltyDetector`, a method of `GRAPH_METHODS`), pixels in."""
    inputs = keras.Input(model.input_shape[1:], name="image")
    scores, features = feature_tensors(model, spec, transfers, inputs)
    novelty = NoveltyScore(detector.method, detector.k, detector.state, dtype="float32", name="novelty")(features)
    return keras.Model(inputs, {SCORES: scores, NOVELTY: novelty}, name=model.name)


def features_model(model: keras.Model, spec: BackboneSpec, transfers: bool) -> keras.Model:
    """Pixels -> the features `with_novelty` scores (what a detector is fitted on)."""
    inputs = keras.Input(model.input_shape[1:], name="image")
    return keras.Model(inputs, feature_tensors(model, spec, transfers, inputs)[1], name=f"{spec.name}_novelty_features")
