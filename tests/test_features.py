"""Cached backbone features: equal to the backbone's output, and training on them is exact."""

import keras
import numpy as np
import pandas as pd
import pytest

from tests.helpers import few_photos
from transfer.data.augmentation import build_augmentation
from transfer.models.registry import get_backbone
from transfer.models.classifier import build_classifier, unfreeze_top
from transfer.data.folders import iter_decoded_batches
from transfer.training.features import extract_features, feature_extractor, features_dataset
from transfer.training.options import TrainOptions
from transfer.training.train import train

SPEC = get_backbone("resnet50")


@pytest.fixture(scope="module")
def photos(hymenoptera, tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return few_photos(hymenoptera / "train", root / "train", 4), few_photos(hymenoptera / "val", root / "val", 3)


@pytest.mark.slow
def test_cached_features_equal_the_backbone_output_on_the_same_batch(photos):
    paths = sorted(str(p) for p in photos[0].rglob("*.jpg"))
    model = build_classifier(SPEC, 2, 32, None, augmentation=build_augmentation())
    cached = extract_features(feature_extractor(model, SPEC), paths, batch_size=3)
    pixels = np.concatenate([b.pixels for b in iter_decoded_batches(paths, 32, batch_size=8)])
    pooled = keras.Model(model.input, model.get_layer("avg_pool").output)(pixels, training=False)
    assert cached.shape == (len(paths), 2048)
    np.testing.assert_allclose(cached, keras.ops.convert_to_numpy(pooled), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_augmented_views_differ(photos):
    paths = sorted(str(p) for p in photos[0].rglob("*.jpg"))[:4]
    model = build_classifier(SPEC, 2, 32, None, augmentation=build_augmentation())
    extractor = feature_extractor(model, SPEC)
    views = extract_features(extractor, paths, 4, augmentation=model.get_layer("augmentation"), views=3)
    plain = extract_features(extractor, paths, 4)
    assert views.shape == (4, 3, 2048)
    assert not np.allclose(views[:, 0], views[:, 1]) and not np.allclose(views[:, 0], plain)


def test_each_epoch_draws_a_view_per_image():
    features = np.arange(6 * 4, dtype="float32").reshape(6, 4, 1)  # 6 images, 4 views
    dataset = features_dataset(features, np.arange(6), batch_size=6, shuffle=False, seed=0)
    epochs = [next(iter(dataset))[0].numpy().ravel() for _ in range(8)]
    for drawn in epochs:
        assert [int(v) // 4 for v in drawn] == list(range(6))  # every image once, one of its views
    assert len({tuple(drawn) for drawn in epochs}) > 1


def test_frozen_backbone_is_in_inference_mode_even_when_called_in_training_mode():
    """With its top unfrozen for fine-tuning, the backbone still normalizes with moving statistics."""
    model = build_classifier(SPEC, 2, 32, None)
    unfreeze_top(model, SPEC, 20)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    pooled = keras.Model(model.input, model.get_layer("avg_pool").output)
    np.testing.assert_allclose(pooled(pixels, training=True), pooled(pixels, training=False), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_cached_frozen_stage_matches_the_backbone_in_the_loop(photos, tmp_path):
    train_dir, val_dir = photos
    results, metrics = {}, {}
    for cache in (True, False):
        options = TrainOptions(
            backbone="resnet50", weights="none", image_size=32, epochs=1, batch_size=4, augment=False,
            val_dir=str(val_dir), cache_features=cache, seed=3, head="dense",
        )
        run = train(train_dir, tmp_path / str(cache), options, verbose=0).run_dir
        results[cache] = pd.read_csv(run / "history.csv")
        metrics[cache] = pd.read_json(run / "metrics.json", typ="series")
        assert pd.read_json(run / "config.json", typ="series")["frozen_features"] == ("cached" if cache else "in_loop")
    for column in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(results[True][column], results[False][column], rtol=1e-3, atol=1e-3)
    # The cached run's final metrics come from its head on cached features, the other's from the
    # whole model on the images: the same numbers.
    assert metrics[True]["val_accuracy"] == metrics[False]["val_accuracy"]
    assert metrics[True]["val_loss"] == pytest.approx(metrics[False]["val_loss"], abs=1e-4)


def test_the_disk_cache_serves_unchanged_images_and_never_a_stale_entry(tmp_path):
    """A counting extractor: a second pass computes nothing; a changed file, size or weight is new."""
    from tests.helpers import write_png
    from transfer.training.features import FeatureCache

    paths = [str(write_png(tmp_path / "images" / f"{i}.png", color=(40 * i, 10, 200))) for i in range(4)]
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    calls = []

    class Counting(keras.Model):
        def predict_on_batch(self, x):
            calls.append(len(x))
            return model.predict_on_batch(x)

    counting = Counting(model.inputs, model.outputs)
    cache = FeatureCache(tmp_path / "cache", counting, 8)
    first = extract_features(counting, paths, 2, cache=cache)
    assert sum(calls) == 4
    again = extract_features(counting, paths, 2, cache=FeatureCache(tmp_path / "cache", counting, 8))
    assert sum(calls) == 4 and np.array_equal(first, again), "all four from the cache"

    write_png(tmp_path / "images" / "2.png", color=(1, 2, 3))  # a changed image
    changed = extract_features(counting, paths, 2, cache=cache)
    assert sum(calls) == 5 and not np.allclose(changed[2], first[2]) and np.array_equal(changed[[0, 1, 3]], first[[0, 1, 3]])

    assert FeatureCache(tmp_path / "cache", counting, 16).folder != cache.folder, "another input size"
    model.layers[-1].set_weights([w + 1 for w in model.layers[-1].get_weights()])
    assert FeatureCache(tmp_path / "cache", counting, 8).folder != cache.folder, "other weights"


def test_the_progress_counts_the_images_from_the_cache_and_says_so(tmp_path):
    """Of 4 images, 1 already cached: the bar runs to 4 of 4 and names the 1; it read 3 of 3 before."""

    from tests.helpers import RecordingReporter, write_png
    from transfer.training.features import FeatureCache


    paths = [str(write_png(tmp_path / "images" / f"{i}.png", color=(50 * i, 10, 200))) for i in range(4)]
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    cache = FeatureCache(tmp_path / "cache", model, 8)
    extract_features(model, paths[:1], 2, cache=cache)
    reporter = RecordingReporter()
    extract_features(model, paths, 2, cache=cache, reporter=reporter, description="train")
    assert reporter.bars == [{"description": "train, 1 of 4 cached", "total": 4, "done": 4}]
    again = RecordingReporter()
    extract_features(model, paths, 2, cache=cache, reporter=again, description="train")
    assert again.bars == [] and again.lines == ["train: all 4 from the feature cache."]


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["a file where the folder goes", "HOME's cache under a file", "a read-only cache"])
def test_a_cache_that_cannot_be_written_is_skipped_with_one_warning(digits_run, tmp_path, monkeypatch, broken):
    """The cache is an optimisation: `transfer train` goes on without it, says so once, and gives
    the features it computed (the same run as with a working cache)."""
    import errno
    import json

    from typer.testing import CliRunner

    from tests.helpers import image_folder
    from transfer.training import features
    from transfer.cli import app

    data = image_folder(tmp_path / "data", classes=("circle", "square"), per_class=6)
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setattr(features, "_UNWRITABLE", {}, raising=False)
    monkeypatch.setattr(features, "_SAID", set(), raising=False)
    argv = ["train", str(data), "--weights", str(digits_run), "--no-augment", "--no-refit"]  # the cache, not the refit, is tested
    if broken == "a file where the folder goes":
        argv += ["--cache-dir", str(tmp_path / "a-file")]
    elif broken == "HOME's cache under a file":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "read-only"))

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "read-only" / "x.npy"))

        monkeypatch.setattr(features.np, "save", read_only)
    result = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert result.output.count("The feature cache cannot be written") == 1, result.output
    assert "going on without it" in result.output
    monkeypatch.undo()  # a working cache, for the reference
    reference = CliRunner().invoke(app, [*argv, "--cache-dir", str(tmp_path / "working"), "--out", str(tmp_path / "reference")])
    assert reference.exit_code == 0 and "cannot be written" not in reference.output, reference.output
    kept = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("run", "reference")]
    assert kept[0]["val_loss"] == pytest.approx(kept[1]["val_loss"], rel=1e-5), "the same features, cached or not"
