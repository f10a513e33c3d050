"""The command line: help generated from the registry, clear errors, no tracebacks."""

import json
import os

import pytest
from typer.testing import CliRunner

from tests.helpers import few_photos
from transfer.models.registry import BACKBONES
from transfer.cli import app

runner = CliRunner()


def test_help_lists_every_registered_backbone():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for name in BACKBONES:
        assert name in result.output


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--epochs", "-1"], "--epochs must be an integer >= 1; received -1"),
        (["--lr", "0"], "--lr must be a finite number > 0; received 0.0"),
        (["--image-size", "16"], "--image-size must be between 32 and 1024 for resnet50; received 16"),
        (["--unfreeze", "some"], "--unfreeze must be 'all' or a number"),
        (["--val-split", "1.5"], "--val-split must be a fraction between 0 and 1"),
        (["--backbone", "lenet", "--finetune-epochs", "2"], "trained from scratch in one stage"),
        (["--backbone", "lenet", "--weights", "imagenet"], "no pretrained weights"),
        (["--cached-views", "4", "--no-augment"], "--cached-views 4 caches augmented views, so it needs --augment"),
    ],
)
def test_invalid_options_fail_before_any_work(tmp_path, options, fragment):
    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run"), *options])
    assert result.exit_code == 2
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_missing_data_folder(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "nope"), "--backbone", "lenet", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_imagenet_unreachable_fails_fast_with_the_way_out(tmp_path, hymenoptera, offline_keras):
    result = runner.invoke(app, ["train", str(hymenoptera / "train"), "--backbone", "vgg16", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in result.output
    assert "--weights PATH" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_predict_needs_a_run_or_savedmodel(tmp_path):
    from tests.helpers import write_png

    result = runner.invoke(app, ["predict", str(tmp_path), str(write_png(tmp_path / "photo.png"))])
    assert result.exit_code == 2 and "neither a run directory" in result.output


def test_backbones_table_counts_parameters():
    result = runner.invoke(app, ["backbones"])
    assert result.exit_code == 0
    for fragment in ("23,587,712", "14,714,688", "21,802,784", "61,706", "62,378,344", "inception_v3_weights"):
        assert fragment in result.stdout


def test_dataset_digits_writes_class_folders(tmp_path):
    result = runner.invoke(app, ["dataset", "digits", str(tmp_path / "digits")])
    assert result.exit_code == 0 and "1797 images" in result.stdout
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == [".transfer.json", *map(str, range(10))]
    again = runner.invoke(app, ["dataset", "digits", str(tmp_path / "digits")])
    assert again.exit_code == 2 and "already exists (an earlier transfer dataset)" in again.output


@pytest.mark.slow
def test_resnet50_smoke_train_finetune_predict_export(tmp_path, hymenoptera):
    """One step each of both stages of resnet50 --weights none on real photos, then predict.

    (A ResNet50 export served is tested with the ImageNet classifier, `tests/test_imagenet.py`.)"""
    train_dir = few_photos(hymenoptera / "train", tmp_path / "train", per_class=3)
    val_dir = few_photos(hymenoptera / "val", tmp_path / "val", per_class=2)
    run = tmp_path / "run"
    result = runner.invoke(app, [
        "train", str(train_dir), "--val-dir", str(val_dir), "--backbone", "resnet50", "--weights", "none",
        "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--finetune-epochs", "1",
        "--unfreeze", "10", "--head", "dense", "--out", str(run),
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["weights"] == "none" and config["finetune_epochs"] == 1
    assert config["transfers"] is True and config["pretrained"] is False, "random weights under a new head are not pretrained"
    assert config["val_split"] is None and config["patience"] == {"frozen": 5, "finetune": 5}, "what was used"
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["frozen", "finetune"]

    photo = next((val_dir / "bees").iterdir())
    predicted = runner.invoke(app, ["predict", str(run), str(photo), "--format", "json", "--top-k", "2"])
    labels = [p["label"] for p in json.loads(predicted.stdout)[0]["predictions"]]
    assert sorted(labels) == ["ants", "bees"]


@pytest.mark.slow
def test_unreadable_image_is_reported_and_others_predicted(tmp_path, hymenoptera):
    import shutil

    run_dir = tmp_path / "run"
    data = few_photos(hymenoptera / "train", tmp_path / "data", per_class=4)
    result = runner.invoke(app, ["train", str(data), "--backbone", "lenet", "--epochs", "1", "--val-split", "0.5", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "new"
    folder.mkdir()
    shutil.copy(next((hymenoptera / "val" / "ants").iterdir()), folder / "ant.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    predicted = runner.invoke(app, ["predict", str(run_dir), str(folder), "--format", "json"])
    assert predicted.exit_code == 0
    entries = {e["path"].rsplit("/", 1)[-1]: e for e in json.loads(predicted.stdout)}
    assert entries["ant.jpg"]["predictions"] and "error" not in entries["ant.jpg"]
    assert entries["broken.jpg"]["error"] and entries["broken.jpg"]["predictions"] == []
    assert "skipped" in predicted.stderr and "broken.jpg" in predicted.stderr


def test_help_is_whole_at_80_columns():
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80"}
    text = subprocess.run([sys.executable, "-m", "transfer.cli", "train", "--help"], capture_output=True, text=True,
                          env=env, check=True).stdout
    assert "…" not in text and "--no-cache-features" in text and "--mixed-precision" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_version():
    from transfer.core.version import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"transfer {__version__}"


@pytest.mark.parametrize("argv", [
    ["backbones"],
    ["train", "data", "--out", "run", "--val-split", "0"],
    ["train", "data", "--out", "run", "--image-size", "100000"],
    ["predict", "run", "photo.jpg", "--top-k", "0"],
    ["evaluate", "run", "data", "--top-k", "0"],
])
def test_cheap_commands_and_option_errors_do_not_import_tensorflow(argv, tmp_path):
    """What keeps them under a second: TensorFlow's import alone takes 4-5 s here."""
    import subprocess
    import sys

    script = (
        "import sys\nfrom transfer.cli import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit as end:\n    code = end.code\n"
        "print('exit', code, 'tensorflow' in sys.modules)"
    )
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    last = printed.stdout.strip().splitlines()[-1]
    assert last.split()[2] == "False", printed.stdout + printed.stderr
    assert last.split()[1] == ("0" if argv == ["backbones"] else "2"), printed.stdout + printed.stderr


@pytest.mark.slow
def test_tensorflow_start_up_lines_are_hidden_but_errors_are_not(digits_run, digits_dir, tmp_path):
    """With TensorFlow's own logging fully on, --verbose shows its native lines and the default does not."""
    import subprocess
    import sys

    def native(stderr):
        return [line for line in stderr.splitlines() if line[:1] in "IWEF" and line[1:5].isdigit() or "absl" in line]

    image = next((digits_dir / "4").iterdir())
    base = [sys.executable, "-m", "transfer.cli"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    verbose = subprocess.run([*base, "--verbose", "predict", str(digits_run), str(image)], capture_output=True, text=True, env=env)
    quiet = subprocess.run([*base, "predict", str(digits_run), str(image)], capture_output=True, text=True, env=env)
    assert verbose.returncode == quiet.returncode == 0, quiet.stderr
    assert native(verbose.stderr), "TensorFlow at log level 0 writes start-up lines"
    assert native(quiet.stderr) == [], quiet.stderr
    assert "Predicting" in quiet.stderr, "the program's own progress still shows"
    failed = subprocess.run([*base, "predict", str(digits_run), str(tmp_path / "missing.png")], capture_output=True,
                            text=True, env=env)
    assert failed.returncode == 2 and failed.stderr.startswith("error: ") and "missing.png does not exist" in failed.stderr


def test_a_frozen_pretrained_backbone_without_weights_is_warned_about(tmp_path):
    """The warning comes before any image is read (here a class of one image then stops the run)."""
    from tests.helpers import image_folder

    data = image_folder(tmp_path / "data", per_class=3)
    for extra in ("1.png", "2.png"):
        (data / "bees" / extra).unlink()
    result = runner.invoke(app, ["train", str(data), "--backbone", "resnet50", "--weights", "none", "--image-size", "32",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "fewer than 2 usable images" in result.output
    assert "--weights none: the frozen resnet50 keeps its random initialization" in result.output



def test_train_ends_with_the_next_commands_and_they_work_as_printed(tmp_path):
    """`train` closes with what to run next on the run's real paths (quoted for the shell): pasted,
    with the user's test folder filled in, the report with its test section and the prediction work
    (a multi-label run's report, on a path,labels CSV: `tests/cli_cases.py`)."""
    import shlex

    from tests.helpers import image_folder

    data, test = image_folder(tmp_path / "data", per_class=6), image_folder(tmp_path / "test", per_class=2)
    run = tmp_path / "my run"  # a space, to be quoted
    result = runner.invoke(app, ["train", str(data), "--out", str(run), "--backbone", "lenet", "--epochs", "1", "--no-augment", "--val-split", "0.5"])
    assert result.exit_code == 0, result.output
    printed = result.stdout.split("Next:\n", 1)[1].splitlines()
    commands = [shlex.split(line.replace("TEST_DIR", shlex.quote(str(test))), comments=True) for line in printed]
    assert [command[:3] for command in commands] == [["transfer", name, str(run)] for name in ("report", "predict", "export")]
    for command in commands[:2]:
        done = runner.invoke(app, command[1:])
        assert done.exit_code == 0, done.output
    page = (run / "report.html").read_text()
    assert f"Metrics (test: {test}, 4 images)" in page and (run / "evaluation" / "metrics.json").is_file()
    assert commands[1][3] in done.stdout  # the image predicted is one of the run's validation images
