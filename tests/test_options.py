"""Training options: defaults that depend on the backbone, and every value checked before any work."""

import pytest

from transfer.core.errors import InvalidOptionError
from transfer.training.options import TrainOptions
from transfer.core.errors import require


def test_defaults_follow_the_backbone():
    resnet = TrainOptions(backbone="resnet50", lr=0.01).resolved()
    assert (resnet.weights, resnet.image_size, resnet.finetune_lr) == ("imagenet", 224, 1e-5), "not tied to the head's rate"
    lenet = TrainOptions(backbone="lenet").resolved()
    assert (lenet.weights, lenet.image_size) == ("none", 32)
    inception = TrainOptions(backbone="inceptionv3", finetune_epochs=1, finetune_lr=0.5).resolved()
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
    from transfer.data.augmentation import TRANSFORMS, build_augmentation
    from transfer.models.registry import BACKBONES

    names = lambda block: [layer.name for layer in block.layers]  # noqa: E731
    assert names(build_augmentation("horizontal", 0, BACKBONES["lenet"].augmentations)) == ["random_flip", "random_translation"]
    assert names(build_augmentation("none", 0, BACKBONES["alexnet"].augmentations)) == ["random_translation"]
    assert len(names(build_augmentation("vertical", 0, BACKBONES["resnet50"].augmentations))) == len(TRANSFORMS)
    with pytest.raises(ValueError, match="shear"):
        build_augmentation("none", 0, ("shear",))


@pytest.mark.slow
@pytest.mark.parametrize(
    "augment, cache_features, cached_views, backbone_runs",
    [
        (False, True, 0, [1]),  # one exact view per image, extracted once
        (True, True, 0, []),  # augmentation in the frozen stage: the backbone runs in the loop
        (True, True, 1, [1]),  # the default: one unaugmented view, augmentation from stage 2
        (True, True, 4, [4]),  # four augmented views per training image
        (True, False, 1, []),  # no cache: in the loop
    ],
)
def test_the_frozen_stage_runs_the_backbone_as_its_options_say(digits_run, digits_dir, tmp_path, monkeypatch,
                                                                augment, cache_features, cached_views, backbone_runs):
    """What `frozen_features` promises, seen in a real frozen stage: how often the backbone is run
    ahead of the epochs on the training images (and with how many views), or not at all."""
    import transfer.training.stages
    from transfer.training.train import train

    calls = []
    extract = transfer.training.stages.extract_features

    def counted(extractor, paths, *args, views=1, **kwargs):
        if "train" in kwargs.get("description", ""):
            calls.append(views)
        return extract(extractor, paths, *args, views=views, **kwargs)

    monkeypatch.setattr(transfer.training.stages, "extract_features", counted)
    options = TrainOptions(weights=str(digits_run), epochs=1, head="dense", flip="none", augment=augment,
                           cache_features=cache_features, cached_views=cached_views, cache_dir=str(tmp_path / "cache"))
    train(digits_dir, tmp_path / "run", options, verbose=0)
    assert calls == backbone_runs


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
    from transfer.core.choices import default_batch_size

    assert default_batch_size(num_train) == expected
    assert expected == 32 or num_train // expected >= 10 or expected == 8


def test_the_default_head_is_logistic_unless_an_option_needs_gradient_descent(monkeypatch):
    assert TrainOptions().resolved().head == "logistic"
    for changes in (dict(epochs=3), dict(lr=0.01), dict(mixup=0.2), dict(head_units=8), dict(cache_features=False)):
        assert TrainOptions(**changes).resolved().head == "dense", changes
    assert TrainOptions(head="logistic", lr=0.01, finetune_epochs=1).resolved().head == "logistic", "asked for, kept"
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h1:1", "h2:1"]}, "task": {"type": "worker", "index": 0}}')
    assert TrainOptions().resolved().head == "dense", "auto becomes multi-worker: each worker holds a shard of the features"


def test_the_four_groups_hold_every_option_once_and_the_command_line_offers_them_in_that_order():
    import dataclasses

    from transfer.training.option_fields import options_of
    from transfer.training.option_groups import DataOptions, ModelOptions, RecipeOptions, RuntimeOptions

    grouped = [f.name for group in (ModelOptions, DataOptions, RecipeOptions, RuntimeOptions) for f in dataclasses.fields(group)]
    assert sorted(grouped) == sorted(f.name for f in dataclasses.fields(TrainOptions))
    assert len(grouped) == len(set(grouped))
    assert options_of("train") == grouped


def test_every_option_is_declared_once_with_its_group_help_and_commands():
    """Adding an option is one field of `TrainFields`: its metadata says all that the checks, the
    command line and the docs need, and each command takes exactly the options that name it."""
    import dataclasses

    import typer.main

    from transfer.cli import app
    from transfer.training.option_fields import COMMANDS, GROUPS, SPELLING, TrainFields, option_flag, options_of

    for field in dataclasses.fields(TrainOptions):
        metadata = field.metadata
        assert metadata["group"] in GROUPS and metadata["help"].strip() and metadata["commands"], field.name
        assert "train" in metadata["commands"] and set(metadata["commands"]) <= set(COMMANDS), field.name
        assert set(metadata) <= {"group", "help", "commands", *SPELLING}, field.name
        assert set(metadata.get("helps", {})) <= set(metadata["commands"]) - {"train"}, field.name
        if "choices" in metadata and field.default is not None:
            assert field.default in metadata["choices"], field.name
    assert dataclasses.fields(TrainOptions) == dataclasses.fields(TrainFields), "TrainOptions adds behaviour, no field"
    commands = typer.main.get_command(app).commands
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    assert options_of("audit") == ["backbone", "preprocess", "backbone_layer", "pooling", "weights", "image_size", "val_split", "manifest",
                                   "allow_split_names", "class_weight", "augment", "flip", "epochs", "lr", "optimizer", "schedule",
                                   "patience", "batch_size", "seed", "cache_dir"]
    for command in COMMANDS:
        taken = [param for param in commands[command].params if param.name in names]
        assert [param.name for param in taken] == options_of(command), command
        for param in taken:
            assert option_flag(param.name) in param.opts, (command, param.name)
    assert option_flag("candidates") == "--backbones" and option_flag("cache_features", negated=True) == "--no-cache-features"


def test_the_library_names_options_by_name_and_spells_them_in_one_place():
    """The messages of the options' checks spell no flag themselves: `option_flag` does (docstrings aside)."""
    import ast
    from pathlib import Path

    import transfer.training.option_groups
    import transfer.training.options

    for module in (transfer.training.options, transfer.training.option_groups):
        tree = ast.parse(Path(module.__file__).read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        spelt = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 and id(node) not in docstrings and "--" in node.value]
        assert spelt == [], module.__name__


def test_each_group_checks_its_own_options():
    """A group's `check` refuses a bad value of its own with the option's name."""
    resolved = TrainOptions(backbone="lenet").resolved()
    for group, option, value, fragment in [
        (resolved.data_options, "val_split", 1.5, "--val-split must be a fraction between 0 and 1"),
        (resolved.recipe_options, "lr", -1.0, "--lr must be a finite number > 0"),
        (resolved.runtime_options, "seed", -3, "--seed must be an integer between 0 and 2**32 - 1"),
    ]:
        import dataclasses

        group.check()  # the resolved values pass
        with pytest.raises(InvalidOptionError, match=fragment.replace("*", r"\*").replace("(", r"\(")):
            dataclasses.replace(group, **{option: value}).check()


def test_options_that_need_gradient_descent_name_themselves_when_they_make_the_head_dense():
    def note(**given):
        options = TrainOptions(backbone="resnet50", weights="none", **given)
        return options.head_note(options.resolved())

    assert note() is None and note(head="dense", lr=0.01) is None, "the default head, or the one asked for: nothing to say"
    assert note(lr=0.01).startswith("Head: dense, trained by gradient descent, instead of the default logistic regression: --lr needs it.")
    assert ": --epochs, --lr, --label-smoothing need it. " in note(lr=0.01, epochs=3, label_smoothing=0.1)
    assert TrainOptions(backbone="lenet", lr=0.01).head_note(TrainOptions(backbone="lenet", lr=0.01).resolved()) is None, (
        "a baseline from scratch has no logistic head to switch from"
    )
