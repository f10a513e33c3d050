"""The four option groups' `check`: every rule, the values on each side of its boundary, and a
message that names the option, echoes the value received and says what is expected.

The groups are built here directly, from values written in this file (not from `TrainOptions`), so
each rule is seen alone; what is expected is spelled out here, not read from the library."""

from __future__ import annotations

import dataclasses
import math

import pytest

from transfer.models.registry import BACKBONES
from transfer.core.errors import InvalidOptionError
from transfer.training.option_groups import DataOptions, ModelOptions, RecipeOptions, RuntimeOptions

LENET, RESNET = BACKBONES["lenet"], BACKBONES["resnet50"]  # a baseline (32 px, no weights); a pretrained one (32 to 1024)

MODEL = ModelOptions(backbone="lenet", candidates=None, preprocess=None, backbone_layer=None, pooling="auto", weights="none", image_size=32,
                     head="dense", head_units=0, dropout=0.2, mixed_precision=False)
DATA = DataOptions(val_split=0.2, val_dir=None, manifest=None, multi_label=False, dedupe=True, allow_split_names=False,
                   class_weight="none", augment=True, flip="horizontal")
RECIPE = RecipeOptions(epochs=1, finetune_epochs=0, unfreeze="all", lr=1e-3, finetune_lr=1e-5, optimizer="adam",
                       schedule="constant", finetune_schedule="cosine", patience=None, batch_size=None, label_smoothing=0.0,
                       mixup=0.0, cutmix=0.0, calibrate="none", refit=True, unknown="knn", unknown_share=0.02)
RUNTIME = RuntimeOptions(seed=0, strategy="auto", cache_features=True, cached_views=1, cache_dir=None, tensorboard=False)


def model_check(spec=LENET, source=None, given_head=None, **changes):
    dataclasses.replace(MODEL, **changes).check(spec, source, given_head)


def refused(check, *fragments: str) -> str:
    """Runs `check`, which must refuse with every fragment in its message (one line); the message."""
    with pytest.raises(InvalidOptionError) as raised:
        check()
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_the_baseline_values_here_pass_every_check():
    model_check()
    model_check(spec=RESNET, weights="imagenet", image_size=224)
    DATA.check()
    RECIPE.check()
    RUNTIME.check()


# ModelOptions


@pytest.mark.parametrize("size, ok", [(31, False), (32, True), (1024, True), (1025, False)])
def test_image_size_between_the_backbones_smallest_and_1024(size, ok):
    check = lambda: model_check(spec=RESNET, weights="imagenet", image_size=size)  # noqa: E731
    if ok:
        check()
    else:
        refused(check, "--image-size must be between 32 and 1024 for resnet50", f"received {size}")


def test_image_size_floor_is_the_backbones_own():
    inception = BACKBONES["inceptionv3"]
    model_check(spec=inception, weights="imagenet", image_size=75)
    refused(lambda: model_check(spec=inception, weights="imagenet", image_size=74),
            "--image-size must be between 75 and 1024 for inceptionv3", "received 74")


def test_a_model_file_saved_for_one_size_takes_only_that_size(tmp_path):
    saved = dataclasses.replace(RESNET, source=str(tmp_path / "mine.keras"), max_input_size=160, min_input_size=160)
    model_check(spec=saved, weights=saved.source, image_size=160)
    for size in (159, 161):
        refused(lambda: model_check(spec=saved, weights=saved.source, image_size=size),
                "--image-size must be 160, the input size saved in", "mine.keras", "(omit --image-size)", f"received {size}")


def test_backbones_only_with_auto():
    refused(lambda: model_check(candidates="lenet,alexnet"), "--backbones must be given only with --backbone auto",
            "received 'lenet,alexnet'")


def test_backbone_layer_only_for_a_model_file(tmp_path):
    message = refused(lambda: model_check(spec=RESNET, weights="imagenet", image_size=224, backbone_layer="conv5"),
                      "--backbone-layer conv5", "resnet50 is not one", "Drop --backbone-layer")
    assert "PATH.keras" in message
    saved = dataclasses.replace(RESNET, source=str(tmp_path / "mine.keras"))
    model_check(spec=saved, weights=saved.source, image_size=224, backbone_layer="conv5")  # a file: allowed
    hub = dataclasses.replace(RESNET, source="keras-hub:resnet_50_imagenet")
    refused(lambda: model_check(spec=hub, weights=hub.source, image_size=224, backbone_layer="conv5"), "--backbone-layer conv5")


def test_weights_must_apply_to_the_backbone(tmp_path):
    refused(lambda: model_check(weights="imagenet"), "lenet is a from-scratch baseline", "--weights imagenet",
            "Use --weights none")
    missing = tmp_path / "nothing.h5"
    refused(lambda: model_check(spec=RESNET, weights=str(missing), image_size=224), "--weights must be", repr(str(missing)))
    present = tmp_path / "weights.h5"
    present.write_bytes(b"x")
    model_check(spec=RESNET, weights=str(present), image_size=224)
    model_check(spec=RESNET, weights="none", image_size=224)


def test_weights_are_not_checked_for_a_run_given_as_weights():
    """A run's backbone (`source`) brings its weights: `weights` is that run's path, not a file."""
    model_check(source="/runs/earlier", weights="/runs/earlier")


def test_head_named_must_be_known():
    refused(lambda: model_check(given_head="mlp"), "--head must be dense | logistic", "received 'mlp'")
    model_check(given_head="dense")
    model_check(given_head="logistic", head="logistic")


@pytest.mark.parametrize("rate, ok", [(-0.01, False), (0.0, True), (0.99, True), (1.0, False), (math.nan, False)])
def test_dropout_in_zero_to_one_open(rate, ok):
    check = lambda: model_check(dropout=rate)  # noqa: E731
    if ok:
        check()
    else:
        refused(check, "--dropout must be a rate in [0, 1)", f"received {rate!r}")


def test_head_units_at_least_zero_and_zero_for_logistic():
    refused(lambda: model_check(head_units=-1), "--head-units must be an integer >= 0 (0: no hidden layer)", "received -1")
    model_check(head_units=0)
    model_check(head_units=64)
    refused(lambda: model_check(head="logistic", head_units=1), "--head-units must be 0 with --head logistic", "received 1")
    model_check(head="logistic", head_units=0)


# DataOptions


@pytest.mark.parametrize("fraction, ok", [(0.0, False), (0.001, True), (0.999, True), (1.0, False), (-0.2, False), (math.nan, False)])
def test_val_split_strictly_between_zero_and_one(fraction, ok):
    check = dataclasses.replace(DATA, val_split=fraction).check
    if ok:
        check()
    else:
        refused(check, "--val-split must be a fraction between 0 and 1", f"received {fraction!r}")


@pytest.mark.parametrize("option, field, bad, allowed", [
    ("--class-weight", "class_weight", "balanced", "none | auto"),
    ("--flip", "flip", "diagonal", "horizontal | vertical | horizontal_and_vertical | none"),
])
def test_data_choices(option, field, bad, allowed):
    refused(dataclasses.replace(DATA, **{field: bad}).check, f"{option} must be {allowed}", f"received {bad!r}")
    for good in allowed.split(" | "):
        dataclasses.replace(DATA, **{field: good}).check()


def test_a_manifest_and_a_validation_folder_exclude_each_other():
    refused(dataclasses.replace(DATA, manifest="m.csv", val_dir="val").check, "--manifest m.csv", "--val-dir val",
            "validation images in its split column")
    dataclasses.replace(DATA, manifest="m.csv").check()
    dataclasses.replace(DATA, val_dir="val").check()


def test_multi_label_needs_a_manifest_and_no_auto_class_weight():
    refused(dataclasses.replace(DATA, multi_label=True).check, "--multi-label", "--manifest FILE.csv")
    refused(dataclasses.replace(DATA, multi_label=True, manifest="m.csv", class_weight="auto").check,
            "--class-weight auto", "--multi-label", "Drop --class-weight auto")
    dataclasses.replace(DATA, multi_label=True, manifest="m.csv").check()
    dataclasses.replace(DATA, class_weight="auto").check()  # single-label: balanced weights allowed


# RecipeOptions


@pytest.mark.parametrize("field, option, bad, good, expected", [
    ("epochs", "--epochs", 0, 1, "an integer >= 1"),
    ("finetune_epochs", "--finetune-epochs", -1, 0, "an integer >= 0"),
    ("patience", "--patience", 0, 1, "an integer >= 1"),
    ("batch_size", "--batch-size", 0, 1, "an integer between 1 and 65536"),
    ("batch_size", "--batch-size", 65537, 65536, "an integer between 1 and 65536"),
    ("label_smoothing", "--label-smoothing", 1.0, 0.999, "a fraction in [0, 1)"),
    ("label_smoothing", "--label-smoothing", -0.1, 0.0, "a fraction in [0, 1)"),
    ("mixup", "--mixup", 10.01, 10.0, "a Beta(a, a) parameter between 0 (off) and 10"),
    ("mixup", "--mixup", -0.1, 0.0, "a Beta(a, a) parameter between 0 (off) and 10"),
    ("cutmix", "--cutmix", 10.01, 10.0, "a Beta(a, a) parameter between 0 (off) and 10"),
    ("cutmix", "--cutmix", -0.1, 0.0, "a Beta(a, a) parameter between 0 (off) and 10"),
])
def test_recipe_numbers_on_each_side_of_their_bounds(field, option, bad, good, expected):
    dataclasses.replace(RECIPE, **{field: good}).check()
    refused(dataclasses.replace(RECIPE, **{field: bad}).check, f"{option} must be {expected}", f"received {bad!r}")


def test_patience_and_batch_size_may_be_left_to_their_defaults():
    dataclasses.replace(RECIPE, patience=None, batch_size=None).check()


@pytest.mark.parametrize("field, option", [("lr", "--lr"), ("finetune_lr", "--finetune-lr")])
@pytest.mark.parametrize("rate, ok", [(0.0, False), (-1e-3, False), (1e-12, True), (10.0, True), (math.inf, False), (math.nan, False)])
def test_learning_rates_finite_and_positive(field, option, rate, ok):
    check = dataclasses.replace(RECIPE, **{field: rate}).check
    if ok:
        check()
    else:
        refused(check, f"{option} must be a finite number > 0", f"received {rate!r}")


@pytest.mark.parametrize("field, option, allowed", [
    ("optimizer", "--optimizer", "adam | sgd | rmsprop"),
    ("schedule", "--schedule", "constant | cosine | onecycle"),
    ("finetune_schedule", "--finetune-schedule", "constant | cosine | onecycle"),
    ("calibrate", "--calibrate", "temperature | none"),
])
def test_recipe_choices(field, option, allowed):
    refused(dataclasses.replace(RECIPE, **{field: "other"}).check, f"{option} must be {allowed}", "received 'other'")
    for good in allowed.split(" | "):
        dataclasses.replace(RECIPE, **{field: good}).check()


@pytest.mark.parametrize("value, ok", [("all", True), ("1", True), ("12", True), ("0", False), ("-1", False),
                                       ("1.5", False), ("top", False), ("", False), ("²", False)])
def test_unfreeze_is_all_or_a_count_of_at_least_one(value, ok):
    """`²` is a digit to `str.isdigit` but not a number to `int`: it must be refused like the others,
    not crash with a ValueError."""
    check = dataclasses.replace(RECIPE, unfreeze=value).check
    if ok:
        check()
    else:
        refused(check, "--unfreeze must be 'all' or a number of top backbone layers >= 1", f"received {value!r}")


# RuntimeOptions


@pytest.mark.parametrize("seed, ok", [(-1, False), (0, True), (2**32 - 1, True), (2**32, False)])
def test_seed_fits_in_32_bits(seed, ok):
    check = dataclasses.replace(RUNTIME, seed=seed).check
    if ok:
        check()
    else:
        refused(check, "--seed must be an integer between 0 and 2**32 - 1", f"received {seed}")


def test_strategy_is_one_of_the_four(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    refused(dataclasses.replace(RUNTIME, strategy="tpu").check, "--strategy must be auto | default | mirrored | multiworker",
            "received 'tpu'")
    for strategy in ("auto", "default", "mirrored"):
        dataclasses.replace(RUNTIME, strategy=strategy).check()


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    refused(dataclasses.replace(RUNTIME, strategy="multiworker").check, "--strategy multiworker", "TF_CONFIG is not set")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h1:1", "h2:1"]}, "task": {"type": "worker", "index": 1}}')
    dataclasses.replace(RUNTIME, strategy="multiworker").check()


def test_cached_views_at_least_zero():
    dataclasses.replace(RUNTIME, cached_views=0).check()
    refused(dataclasses.replace(RUNTIME, cached_views=-1).check, "--cached-views must be an integer >= 0", "received -1")
