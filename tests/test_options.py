"""Training options: defaults that depend on the backbone, and every value checked before any work."""

import pytest

from transfer.errors import InvalidOptionError
from transfer.options import TrainOptions
from transfer.errors import require


def test_defaults_follow_the_backbone():
    resnet = TrainOptions(backbone="resnet50", lr=0.01).resolved()
    assert (resnet.weights, resnet.image_size, resnet.finetune_lr) == ("imagenet", 224, 1e-5), "not tied to the head's rate"
    lenet = TrainOptions(backbone="lenet").resolved()
    assert (lenet.weights, lenet.image_size) == ("none", 32)
    inception = TrainOptions(backbone="inceptionv3", finetune_lr=0.5).resolved()
    assert (inception.image_size, inception.finetune_lr) == (299, 0.5)


def test_optimizer_and_rate_follow_what_trains_first(digits_run):
    """A new head starts from Adam at 1e-3; a baseline from scratch from SGD at its published-style
    rate; a baseline reused as a backbone (a run as --weights) gets a new head, so Adam again."""
    resnet = TrainOptions(backbone="resnet50").resolved()
    assert (resnet.optimizer, resnet.lr, resnet.finetune_lr) == ("adam", 1e-3, 1e-5)
    lenet, alexnet = TrainOptions(backbone="lenet").resolved(), TrainOptions(backbone="alexnet").resolved()
    assert (lenet.optimizer, lenet.lr, alexnet.optimizer, alexnet.lr) == ("sgd", 0.03, "sgd", 0.01)
    chosen = TrainOptions(backbone="lenet", optimizer="rmsprop", lr=0.5).resolved()
    assert (chosen.optimizer, chosen.lr) == ("rmsprop", 0.5)
    reused = TrainOptions(weights=str(digits_run)).resolved()
    assert (reused.backbone, reused.optimizer, reused.lr) == ("lenet", "adam", 1e-3)
    assert reused.finetune_lr == 1e-3, "a small network's reused layers fine-tune at the head's rate, not a tenth of it"
    assert TrainOptions(weights=str(digits_run), lr=4e-3).resolved().finetune_lr == 4e-3


def test_baselines_augment_with_flips_and_translations_only():
    from transfer.augmentation import TRANSFORMS, build_augmentation
    from transfer.backbones import BACKBONES

    names = lambda block: [layer.name for layer in block.layers]  # noqa: E731
    assert names(build_augmentation("horizontal", 0, BACKBONES["lenet"].augmentations)) == ["random_flip", "random_translation"]
    assert names(build_augmentation("none", 0, BACKBONES["alexnet"].augmentations)) == ["random_translation"]
    assert len(names(build_augmentation("vertical", 0, BACKBONES["resnet50"].augmentations))) == len(TRANSFORMS)
    with pytest.raises(ValueError, match="shear"):
        build_augmentation("none", 0, ("shear",))


@pytest.mark.parametrize(
    "augment, cache_features, cached_views, expected",
    [
        (False, True, 0, "cached"),  # one exact view per image
        (True, True, 0, "in_loop"),  # augmentation in the frozen stage, with the backbone in the loop
        (True, True, 1, "cached"),  # the default: one unaugmented view, augmentation from stage 2
        (False, True, 1, "cached"),
        (True, True, 4, "cached_views"),
        (False, False, 0, "in_loop"),
        (True, False, 0, "in_loop"),
    ],
)
def test_frozen_features(augment, cache_features, cached_views, expected):
    options = TrainOptions(augment=augment, cache_features=cache_features, cached_views=cached_views)
    assert options.frozen_features == expected


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"optimizer": "adamw"}, "--optimizer must be adam | sgd | rmsprop; received 'adamw'"),
        ({"flip": "diagonal"}, "--flip must be horizontal | vertical | horizontal_and_vertical | none"),
        ({"strategy": "tpu"}, "--strategy must be auto | default | mirrored | multiworker"),
        ({"class_weight": "balanced"}, "--class-weight must be none | auto"),
        ({"dropout": 1.0}, "--dropout must be a rate in [0, 1)"),
        ({"unfreeze": "0"}, "--unfreeze must be 'all' or a number of top backbone layers >= 1"),
        ({"manifest": "m.csv", "val_dir": "v"}, "a manifest gives the validation images"),
        ({"backbone": "inceptionv3", "image_size": 64}, "--image-size must be between 75 and 1024 for inceptionv3"),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(changes, fragment):
    with pytest.raises(InvalidOptionError) as raised:
        TrainOptions(**changes).resolved()
    assert fragment in str(raised.value)


def test_require_echoes_the_value_received():
    require(True, "--epochs", 3, "an integer >= 1")
    with pytest.raises(InvalidOptionError, match=r"--epochs must be an integer >= 1; received 0\.$"):
        require(False, "--epochs", 0, "an integer >= 1")


@pytest.mark.parametrize("num_train, expected", [(25, 8), (80, 8), (160, 16), (244, 24), (320, 32), (5000, 32)])
def test_default_batch_size_gives_small_data_ten_steps_an_epoch(num_train, expected):
    from transfer.options import default_batch_size

    assert default_batch_size(num_train) == expected
    assert expected == 32 or num_train // expected >= 10 or expected == 8


def test_the_default_head_is_logistic_unless_an_option_needs_gradient_descent(monkeypatch):
    assert TrainOptions().resolved().head == "logistic"
    for changes in (dict(epochs=3), dict(lr=0.01), dict(mixup=0.2), dict(head_units=8), dict(cache_features=False)):
        assert TrainOptions(**changes).resolved().head == "dense", changes
    assert TrainOptions(head="logistic", lr=0.01, finetune_epochs=1).resolved().head == "logistic", "asked for, kept"
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h1:1", "h2:1"]}, "task": {"type": "worker", "index": 0}}')
    assert TrainOptions().resolved().head == "dense", "auto becomes multi-worker: each worker holds a shard of the features"
