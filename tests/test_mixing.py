"""Label smoothing, MixUp and CutMix: the loss and the mixed batches against the formulas, written
out here; mixing happens on training batches only."""

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from transfer.core.errors import InvalidOptionError
from transfer.training.mixing import make_loss, mixed_batches, one_hot_targets
from transfer.training.options import TrainOptions
from transfer.models.saving import load_run_model

PROBABILITIES = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]], np.float32)
LABELS = np.array([0, 2, 0])


def cross_entropy(targets: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean(-np.sum(targets * np.log(probabilities), axis=1)))


def test_without_smoothing_or_mixing_the_loss_is_cross_entropy_on_class_indices():
    loss = make_loss(TrainOptions())
    expected = np.mean([-np.log(0.7), -np.log(0.6), -np.log(0.25)])
    assert float(loss(LABELS, PROBABILITIES)) == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_moves_x_of_the_target_evenly_onto_every_class():
    x = 0.1
    targets = (1 - x) * np.eye(3)[LABELS] + x / 3
    # by hand, image 0: -(0.9333 log 0.7 + 0.0333 log 0.2 + 0.0333 log 0.1)
    assert targets[0] == pytest.approx([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    loss = make_loss(TrainOptions(label_smoothing=x))
    assert float(loss(np.eye(3)[LABELS], PROBABILITIES)) == pytest.approx(cross_entropy(targets, PROBABILITIES), rel=1e-5)
    assert float(loss(np.eye(3)[LABELS], PROBABILITIES)) > float(make_loss(TrainOptions())(LABELS, PROBABILITIES))


def uniform_batch(size: int = 8, side: int = 16):
    """Image i is the constant 10 * (i + 1); its class is i, so a target shows where each part came from."""
    values = 10.0 * np.arange(1, size + 1, dtype=np.float32)
    images = np.broadcast_to(values[:, None, None, None], (size, side, side, 3)).copy()
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(size))).batch(size)
    return values, one_hot_targets(dataset, size)


def test_mixup_mixes_images_and_targets_with_the_same_weights():
    values, dataset = uniform_batch()
    images, targets = next(iter(mixed_batches(dataset, TrainOptions(mixup=0.4), seed=3)))
    images, targets = images.numpy(), targets.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-5)
    assert (targets.max(axis=1) < 1 - 1e-3).any(), "some image should be a mix"
    np.testing.assert_allclose(images[:, 0, 0, 0], targets @ values, rtol=1e-4)  # w * image + (1 - w) * other
    np.testing.assert_allclose(images.std(axis=(1, 2, 3)), 0, atol=1e-3)  # a blend, no patch
    # the loss on the mixed batch is the cross-entropy against the mixed targets
    probabilities = np.full_like(targets, 1 / len(values)) * 0.5 + np.eye(len(values)) * 0.5
    loss = make_loss(TrainOptions(mixup=0.4))
    assert float(loss(targets, probabilities)) == pytest.approx(cross_entropy(targets, probabilities), rel=1e-5)


def test_cutmix_pastes_a_box_and_targets_follow_the_area_kept():
    side = 64
    values, dataset = uniform_batch(side=side)
    images, targets = next(iter(mixed_batches(dataset, TrainOptions(cutmix=1.0), seed=5)))
    images, targets = images.numpy()[..., 0], targets.numpy()
    mixed = 0
    for i, image in enumerate(images):
        parts = {float(value): float(np.mean(image == value)) for value in np.unique(image)}
        assert set(parts) <= set(values.tolist())
        for value, share in parts.items():  # the share of pixels from each image is its weight in the target,
            # up to the box's real-valued corners that Keras weighs by (less than a row and a column)
            assert targets[i, list(values).index(value)] == pytest.approx(share, abs=2 / side)
        mixed += len(parts) > 1
        if len(parts) > 1:
            rows, columns = np.nonzero(image != values[i])
            box = image[rows.min(): rows.max() + 1, columns.min(): columns.max() + 1]
            assert (box != values[i]).all(), "the pasted part is one rectangle"
    assert mixed >= 1


def test_with_both_each_batch_gets_one_of_the_two():
    values, dataset = uniform_batch(side=20)
    kinds = set()
    for images, targets in mixed_batches(dataset.repeat(12), TrainOptions(mixup=0.4, cutmix=1.0), seed=7):
        image = images.numpy()[..., 0]
        patched = any(len(np.unique(one)) > 1 for one in image)
        blended = any(len(np.unique(one)) == 1 and float(one[0, 0]) not in values for one in image)
        assert not (patched and blended)
        kinds.add("cutmix" if patched else "mixup" if blended else "none")
    assert {"cutmix", "mixup"} <= kinds


def test_mixing_is_refused_with_cached_views_and_the_logistic_head():
    with pytest.raises(InvalidOptionError, match="--cached-views 4 caches backbone features of single images"):
        TrainOptions(backbone="resnet50", weights="none", mixup=0.2, cached_views=4).resolved()
    with pytest.raises(InvalidOptionError, match="--head logistic fits unmixed features"):
        TrainOptions(backbone="resnet50", weights="none", cutmix=1.0, head="logistic").resolved()
    with pytest.raises(InvalidOptionError, match="so --label-smoothing, --tensorboard would have no effect"):
        TrainOptions(backbone="resnet50", weights="none", head="logistic", label_smoothing=0.1, tensorboard=True).resolved()
    TrainOptions(backbone="resnet50", weights="none", head="logistic", label_smoothing=0.1, finetune_epochs=2).resolved()
    with pytest.raises(InvalidOptionError, match="--label-smoothing must be a fraction in"):
        TrainOptions(backbone="lenet", label_smoothing=1.0).resolved()


def test_with_mixing_the_frozen_backbone_runs_on_the_mixed_images():
    assert TrainOptions(backbone="resnet50", augment=False).frozen_features == "cached"
    assert TrainOptions(backbone="resnet50", augment=False, mixup=0.2).frozen_features == "in_loop"


@pytest.mark.slow
def test_validation_is_never_mixed(digits_dir, tmp_path):
    """After one epoch with MixUp, CutMix and label smoothing, the validation loss Keras logged is the
    run's loss (smoothed targets) of the model on the unmixed validation images, and metrics.json's
    is the plain cross-entropy."""
    import keras

    from transfer.outputs.artifacts import Run
    from transfer.training.train import train

    options = TrainOptions(backbone="lenet", epochs=1, mixup=0.4, cutmix=1.0, label_smoothing=0.1, augment=False, seed=2)
    result = train(digits_dir, tmp_path / "run", options, verbose=0)
    run = Run.open(result.run_dir)
    history = pd.read_csv(run.path / "history.csv")
    val = run.validation_images()
    classes = run.labels()
    from transfer.data.folders import iter_decoded_batches

    model = load_run_model(run)
    # Keras logged the model as trained; metrics.json measures it as published, with its temperature.
    trained = keras.Model(model.inputs[0], model.get_layer("temperature").input) if run.config()["temperature"] else model
    pixels = [batch.pixels for batch in iter_decoded_batches(val["path"].tolist(), 32, 64)]
    probabilities = np.concatenate([trained.predict_on_batch(batch) for batch in pixels])
    published = np.concatenate([model.predict_on_batch(batch) for batch in pixels])
    targets = np.eye(len(classes))[[classes.index(label) for label in val["label"]]]
    smoothed = 0.9 * targets + 0.1 / len(classes)
    assert history["val_loss"].iloc[0] == pytest.approx(cross_entropy(smoothed, probabilities), rel=1e-3)
    assert json.loads((run.path / "metrics.json").read_text())["val_loss"] == pytest.approx(cross_entropy(targets, published), rel=1e-3)
    config = run.config()
    assert (config["mixup"], config["cutmix"], config["label_smoothing"]) == (0.4, 1.0, 0.1)
    keras.backend.clear_session()
