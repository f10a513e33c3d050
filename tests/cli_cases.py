"""Bad input, case by case: what a user types, and what `transfer` answers.

`CASES` drives `tests/test_bad_input.py::test_cli_case` and prints the table of the cases with the
first line the user sees and the exit code:

    .venv/bin/python -m tests.cli_cases
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from tests.helpers import image_folder, write_png


class Workspace:
    """Folders for the cases, made on demand under `root`: a good dataset, a trained run, an export."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def fresh(self, name: str) -> Path:
        """A path under `root` not handed out before."""
        self._count = getattr(self, "_count", 0) + 1
        return self.root / f"{name}-{self._count}"

    @functools.cached_property
    def data(self) -> Path:
        return image_folder(self.root / "data")

    @functools.cached_property
    def run(self) -> Path:
        from transfer.training.options import TrainOptions
        from transfer.training.train import train

        options = TrainOptions(backbone="lenet", epochs=1, augment=False, val_split=0.5)
        return train(self.data, self.root / "run", options, verbose=0).run_dir

    @functools.cached_property
    def multi_label_manifest(self) -> Path:
        rows = "".join(f"{path},{'ants;bees' if i % 3 == 0 else path.parent.name}\n"
                       for i, path in enumerate(sorted(self.data.glob("*/*.png"))))
        (self.root / "tags.csv").write_text("path,labels\n" + rows)
        return self.root / "tags.csv"

    @functools.cached_property
    def multi_label_run(self) -> Path:
        from transfer.training.options import TrainOptions
        from transfer.training.train import train

        options = TrainOptions(backbone="lenet", epochs=1, augment=False, manifest=str(self.multi_label_manifest))
        return train(None, self.root / "multi-label-run", options, verbose=0).run_dir

    @functools.cached_property
    def export(self) -> Path:
        from transfer.deploy.export import export

        return export(self.run, self.root / "export").path

    def copy_of(self, source: Path, name: str) -> Path:
        destination = self.root / name
        shutil.copytree(source, destination, symlinks=True)
        return destination


@dataclass
class Case:
    name: str
    argv: Callable[[Workspace], list[str]]
    exit_code: int
    fragment: str  # in the first line of the answer


def _data_with(ws: Workspace, name: str, change: Callable[[Path], None]) -> Path:
    root = ws.copy_of(ws.data, name)
    change(root)
    return root


def _corrupt_some(root: Path) -> None:
    (root / "ants" / "empty.jpg").write_bytes(b"")
    (root / "ants" / "truncated.png").write_bytes((root / "ants" / "0.png").read_bytes()[:60])
    (root / "bees" / "notes.jpg").write_text("not an image at all")


def _evaluated(ws: Workspace) -> Path:
    run = ws.copy_of(ws.run, "run-evaluated")
    (run / "evaluation").mkdir()
    return run


def _bees_to_wasps(root: Path) -> None:
    (root / "bees").rename(root / "wasps")


def _one_usable_bee(root: Path) -> None:
    for path in sorted((root / "bees").iterdir())[1:]:
        path.write_bytes(b"\xff\xd8\xff broken")


def _manifest(ws: Workspace, name: str, text: str) -> str:
    path = ws.path(name)
    path.write_text(text.format(data=ws.data))
    return str(path)


def _split_folders(ws: Workspace) -> Path:
    """A dataset as it often arrives: `train/` and `val/`, each with the class folders."""
    root = ws.path("splits")
    if not root.is_dir():
        image_folder(root / "train")
        image_folder(root / "val")
    return root


def _copy_tree(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


def _text(ws: Workspace, name: str, text: str) -> str:
    path = ws.path(name)
    path.write_text(text)
    return str(path)


def _project_without_columns(ws: Workspace) -> list[str]:
    project = ws.path("project")
    project.mkdir(exist_ok=True)
    (project / "project.json").write_text('{"model": "imagenet:resnet50"}')
    (project / "labels.csv").write_text("file,class\nx.png,ants\n")
    return ["suggest", str(project), str(ws.data), "--out", str(ws.fresh("next")) + ".csv"]


def _train(data: str, ws: Workspace, *extra: str) -> list[str]:
    return ["train", data, "--backbone", "lenet", "--epochs", "1", "--no-augment", "--out", str(ws.fresh("out")), *extra]


def _next_report(ws: Workspace) -> list[str]:
    """The report `train` prints as a multi-label run's next command, its test images a path,labels CSV."""
    import shlex

    from transfer.cli.printers import next_commands

    printed = next_commands(ws.multi_label_run)[0]
    assert "TEST.csv" in printed
    return shlex.split(printed.replace("TEST.csv", shlex.quote(str(ws.multi_label_manifest))), comments=True)[1:]


def _labels_mismatch(ws: Workspace) -> list[str]:
    run = ws.copy_of(ws.run, "run-labels")
    (run / "labels.txt").write_text("ants\nbees\nwasps\n")
    return ["predict", str(run), str(ws.data / "ants" / "0.png")]


def _corrupt_model(ws: Workspace) -> list[str]:
    run = ws.copy_of(ws.run, "run-corrupt")
    data = (run / "model.keras").read_bytes()
    (run / "model.keras").write_bytes(data[: len(data) // 2])
    return ["predict", str(run), str(ws.data / "ants" / "0.png")]


def _corrupt_savedmodel(ws: Workspace) -> list[str]:
    export = ws.copy_of(ws.export, "export-corrupt")
    (export / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 10)
    return ["predict", str(export), str(ws.data / "ants" / "0.png")]


def _interrupted(ws: Workspace) -> list[str]:
    partial = ws.path(".interrupted.partial")
    partial.mkdir()
    (partial / "resume.json").write_text("{}")
    return _train(str(ws.data), ws)[:-1] + [str(ws.path("interrupted"))]


def _unreadable_only(ws: Workspace) -> list[str]:
    folder = ws.path("new-images")
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff nope")
    return ["predict", str(ws.run), str(folder)]


def _one_good_one_broken(root: Path) -> None:
    for path in sorted((root / "bees").iterdir())[2:]:
        path.unlink()
    (root / "bees" / "1.png").write_bytes(b"")


def _two_bees(root: Path) -> None:
    for path in sorted((root / "bees").iterdir())[2:]:
        path.unlink()


def _folder(ws: Workspace, name: str) -> Path:
    ws.path(name).mkdir(exist_ok=True)
    return ws.path(name)


def _data_inside_run(ws: Workspace) -> list[str]:
    run = ws.copy_of(ws.run, "run-with-data")
    shutil.copytree(ws.data, run / "mydata")
    return ["train", str(run / "mydata"), "--backbone", "lenet", "--epochs", "1", "--out", str(run), "--force"]


def _export_over_thesis(ws: Workspace) -> list[str]:
    folder = ws.path("myproj")
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "thesis.tex").write_text("chapter 1")
    return ["export", str(ws.run), "--out", str(folder), "--force"]


def _report_over_notes(ws: Workspace) -> list[str]:
    notes = ws.path("notes.html")
    notes.write_text("<p>my notes</p>")
    return ["report", str(ws.run), "--out", str(notes), "--force"]


def _dataset_twice(ws: Workspace) -> list[str]:
    from transfer.datasets import write_dataset

    write_dataset("digits", ws.path("digits"))
    return ["dataset", "digits", str(ws.path("digits")), "--force"]


def _evaluate_twice(ws: Workspace) -> list[str]:
    from transfer.evaluation.evaluate import evaluate_folder

    evaluate_folder(ws.run, ws.data, ws.path("evaluation-twice"))
    return ["evaluate", str(ws.run), str(ws.data), "--out", str(ws.path("evaluation-twice")), "--force"]


def _mixed_formats(ws: Workspace) -> list[str]:
    folder = ws.path("formats")
    folder.mkdir()
    for fmt, name in (("WEBP", "a.webp"), ("TIFF", "b.tif"), ("PNG", "c.png")):
        Image.new("RGB", (40, 40), (200, 30, 30)).save(folder / name, format=fmt)
    return ["predict", str(ws.run), str(folder)]


def _duplicates(root: Path) -> None:
    # Fixed --val-dir, so the copy is certainly in validation.
    shutil.copy(root / "train" / "ants" / "0.png", root / "val" / "ants" / "copy.png")


def _split_dirs(ws: Workspace, name: str, change=None) -> list[str]:
    root = ws.path(name)
    image_folder(root / "train")
    image_folder(root / "val", per_class=2)
    if change:
        change(root)
    return _train(str(root / "train"), ws, "--val-dir", str(root / "val"))


def _lone_tflite(ws: Workspace) -> list[str]:
    """A .tflite file copied away from its export folder, without labels.txt."""
    lone = ws.fresh("lone")
    lone.mkdir()
    (lone / "model.tflite").write_bytes(b"TFL3 not read: labels.txt is checked first")
    return ["predict", str(lone / "model.tflite"), str(ws.data)]


_LISTENING: list = []  # sockets kept open while their case runs


def _port_in_use(ws: Workspace) -> list[str]:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    _LISTENING.append(listener)
    return ["serve", str(ws.run), "--port", str(listener.getsockname()[1])]


CASES = [
    # Image folders: structure (exit 2 before any heavy work)
    Case("data folder missing", lambda ws: _train(str(ws.path("nope")), ws), 2, "does not exist"),
    Case("no class subfolders", lambda ws: _train(str(_data_with(ws, "flat", lambda r: [shutil.rmtree(r / c) for c in ("ants", "bees")])), ws), 2, "has 0 class subfolder(s)"),
    Case("a single class", lambda ws: _train(str(_data_with(ws, "single", lambda r: shutil.rmtree(r / "bees"))), ws), 2, "has 1 class subfolder(s) (ants)"),
    Case("an empty class", lambda ws: _train(str(_data_with(ws, "empty-class", lambda r: (r / "wasps").mkdir())), ws), 2, "has no image files"),
    Case("images directly in DATA_DIR", lambda ws: _train(str(_data_with(ws, "loose", lambda r: write_png(r / "stray.png"))), ws), 2, "holds images directly"),
    Case("--val-dir with other classes", lambda ws: _split_dirs(ws, "split-classes", lambda r: (r / "val" / "bees").rename(r / "val" / "wasps")), 2, "The validation folder"),
    Case("a class with < 2 usable images", lambda ws: _train(str(_data_with(ws, "few", _one_usable_bee)), ws), 2, "bees: 1 usable, 5 skipped ("),
    Case("a class of 1 good and 1 broken image: the broken one named", lambda ws: _train(str(_data_with(ws, "one-good", _one_good_one_broken)), ws), 2, "bees: 1 usable, 1 skipped ("),
    Case("a class of exactly 2 images gets a validation image", lambda ws: _train(str(_data_with(ws, "pair", _two_bees)), ws), 0, "bees: 1 train, 1 val"),
    Case("--out inside the data folder", lambda ws: ["train", str(ws.data), "--backbone", "lenet", "--out", str(ws.data / "run1")], 2, "is inside the data folder"),
    Case("--out under a file", lambda ws: ["train", str(ws.data), "--backbone", "lenet", "--out", str(_manifest(ws, "a-file.txt", "x\n")) + "/run"], 1, "a-file.txt is a file, not a folder"),
    # Image folders: problems that do not stop training (exit 0, reported)
    Case("unreadable files (empty, truncated, text)", lambda ws: _train(str(_data_with(ws, "corrupt", _corrupt_some)), ws), 0, "Skipped 3 file(s)"),
    Case("train/val exact duplicates", lambda ws: _split_dirs(ws, "dupes", _duplicates), 0, "byte-for-byte copies of training images"),
    Case("imbalanced classes", lambda ws: _train(str(_data_with(ws, "imbalanced", lambda r: image_folder(r, classes=("bees",), per_class=20))), ws), 0, "Classes are imbalanced"),
    # Manifests
    Case("manifest missing a column", lambda ws: ["train", "--manifest", _manifest(ws, "m1.csv", "path,class\na.png,ants\n"), "--out", str(ws.fresh("out"))], 2, "lacks label"),
    Case("manifest naming missing files", lambda ws: ["train", "--manifest", _manifest(ws, "m2.csv", "path,label\n{data}/ants/0.png,ants\nnope.png,bees\n"), "--out", str(ws.fresh("out"))], 2, "1 file(s) listed in manifest"),
    Case("manifest with a bad split value", lambda ws: ["train", "--manifest", _manifest(ws, "m3.csv", "path,label,split\n{data}/ants/0.png,ants,test\n"), "--out", str(ws.fresh("out"))], 2, "a split other than train or val"),
    Case("manifest and DATA_DIR both", lambda ws: _train(str(ws.data), ws, "--manifest", _manifest(ws, "m4.csv", "path,label\n")), 2, "give one of them"),
    # Options (exit 2 before any heavy work)
    Case("negative epochs", lambda ws: _train(str(ws.data), ws, "--epochs", "-3"), 2, "--epochs must be an integer >= 1; received -3"),
    Case("learning rate infinite", lambda ws: _train(str(ws.data), ws, "--lr", "inf"), 2, "--lr must be a finite number > 0; received inf"),
    Case("a seed out of range", lambda ws: _train(str(ws.data), ws, "--seed", "-1"), 2, "--seed must be an integer between 0 and 2**32 - 1"),
    Case("an enormous batch size", lambda ws: ["predict", str(ws.run), str(ws.data), "--batch-size", "99999999999999999999"], 2, "--batch-size must be an integer between 1 and 65536"),
    Case("compare the same backbone twice", lambda ws: ["compare", str(ws.data), "--backbones", "lenet,lenet", "--out", str(ws.fresh("cmp"))], 2, "--backbones names lenet more than once"),
    Case("learning rate <= 0", lambda ws: _train(str(ws.data), ws, "--lr", "0"), 2, "--lr must be a finite number > 0; received 0.0"),
    Case("unknown backbone", lambda ws: ["train", str(ws.data), "--backbone", "resnet", "--out", str(ws.fresh("out"))], 2, "Unknown backbone 'resnet'; did you mean resnet50? Choose one of"),
    Case("the folder above train/ and val/", lambda ws: _train(str(_split_folders(ws)), ws), 2, "holds folders named like splits (train, val), not classes"),
    Case("compare on the folder above the splits", lambda ws: ["compare", str(_split_folders(ws)), "--backbones", "lenet", "--out", str(ws.fresh("cmp"))], 2, "--val-dir"),
    Case("features into a .csv name", lambda ws: ["features", str(ws.run), str(ws.data), "--out", str(ws.path("feats.csv"))], 2, "Name the file feats.parquet"),
    Case("report into a .txt name", lambda ws: ["report", str(ws.run), "--out", str(ws.path("notes.txt"))], 2, "this writes HTML (.html, .htm)"),
    Case("report into a folder not there yet", lambda ws: ["report", str(ws.run), "--gradcam", "0", "--errors", "0", "--out", str(ws.fresh("reports")) + "/"], 0, "/report.html"),
    Case("predict a mistyped run path", lambda ws: ["predict", str(ws.path("runs/r5")), str(ws.data)], 2, "runs/r5 does not exist; expected a run directory"),
    Case("serve a mistyped run path", lambda ws: ["serve", str(ws.path("runs/r5"))], 2, "runs/r5 does not exist; expected a run directory"),
    Case("report a mistyped run path", lambda ws: ["report", str(ws.path("runs/r5"))], 2, "runs/r5 does not exist; expected a run directory"),
    Case("predict a text file", lambda ws: ["predict", str(ws.run), _text(ws, "notes.txt", "hello")], 2, "notes.txt: not a JPEG, PNG, GIF, BMP or WebP file"),
    Case("visualize --image that does not exist", lambda ws: ["visualize", str(ws.run), "--image", str(ws.path("nosuch.jpg"))], 2, "nosuch.jpg does not exist"),
    Case("visualize --layers with a misspelt name", lambda ws: ["visualize", str(ws.run), "--layers", "c11", "--out", str(ws.fresh("vis"))], 2, "--layers: c11 is not a layer of lenet (8 layers, from c1 to predictions); the closest: c1."),
    Case("a misspelt option", lambda ws: _train(str(ws.data), ws, "--epoch", "2"), 2, "No such option: --epoch. Did you mean --epochs? See `transfer train --help`."),
    Case("a word for a number", lambda ws: _train(str(ws.data), ws, "--epochs", "two"), 2, "Invalid value for '--epochs': Input should be a valid integer, unable to parse string as an integer; received 'two'."),
    Case("--val-dir that does not exist", lambda ws: _train(str(ws.data), ws, "--val-dir", str(ws.path("nosuch-val"))), 2, "--val-dir "),
    Case("a global option after the command", lambda ws: ["backbones", "--verbose"], 2, "--verbose is an option of transfer itself: put it before the command"),
    Case("--unfreeze for a baseline from scratch", lambda ws: _train(str(ws.data), ws, "--unfreeze", "2"), 2, "lenet is trained from scratch in one stage; received --unfreeze"),
    Case("a fine-tuning option without fine-tuning", lambda ws: ["train", str(ws.data), "--backbone", "resnet50", "--weights", "none", "--finetune-lr", "1e-4", "--out", str(ws.fresh("out"))], 2, "but no --finetune-epochs: stage 2 would not run"),
    Case("lr-find with fine-tuning options", lambda ws: ["lr-find", str(ws.data), "--backbone", "lenet", "--finetune-epochs", "2", "--out", str(ws.fresh("lr"))], 2, "lr-find sweeps the first stage's learning rate (--lr); --finetune-epochs"),
    Case("features of a misspelt imagenet model", lambda ws: ["features", "imagenet:resnet", str(ws.data), "--out", str(ws.fresh("feats")) + "/"], 2, "imagenet:resnet: the ImageNet classifiers are"),
    Case("visualize --layers matching nothing", lambda ws: ["visualize", str(ws.run), "--layers", "nosuch", "--out", str(ws.fresh("vis"))], 2, "its layers include c1"),
    Case("a choice's other name", lambda ws: ["export", str(ws.run), "--format", "tflite", "--out", str(ws.fresh("exp"))], 2, "'tflite' is not one of 'savedmodel', 'litert', 'onnx'. Did you mean litert?"),
    Case("a near miss of a choice", lambda ws: ["dataset", "shape", str(ws.fresh("ds"))], 2, "Did you mean shapes?"),
    Case("a misspelt command", lambda ws: ["trian", str(ws.data)], 2, "No such command 'trian'. Did you mean 'train'?"),
    Case("--backbone a model file that does not exist", lambda ws: ["train", str(ws.data), "--backbone", str(ws.path("colleague.keras")), "--out", str(ws.fresh("out"))], 2, "colleague.keras: no such file"),
    Case("--backbone a file that is not a Keras model", lambda ws: ["train", str(ws.data), "--backbone", str(write_png(ws.path("photo.png"))), "--out", str(ws.fresh("out"))], 2, "photo.png is not a Keras model file"),
    Case("--backbone a .keras file that is not a zip", lambda ws: ["train", str(ws.data), "--backbone", _text(ws, "broken.keras", "hello"), "--out", str(ws.fresh("out"))], 2, "is not a Keras 3 model file"),
    Case("--preprocess for a registry backbone", lambda ws: ["train", str(ws.data), "--backbone", "lenet", "--preprocess", "tf", "--out", str(ws.fresh("out"))], 2, "--preprocess applies to a model file"),
    Case("--backbone keras-hub: without a preset", lambda ws: ["train", str(ws.data), "--backbone", "keras-hub:", "--out", str(ws.fresh("out"))], 2, "names no preset"),
    Case("--unfreeze beyond the backbone", lambda ws: ["train", str(ws.data), "--backbone", "resnet50", "--weights", "none", "--image-size", "32", "--finetune-epochs", "1", "--unfreeze", "9999", "--out", str(ws.fresh("out"))], 2, "--unfreeze must be 'all' or between 1 and"),
    Case("image size far too large", lambda ws: _train(str(ws.data), ws, "--image-size", "100000"), 2, "--image-size must be between 32 and 1024 for lenet; received 100000"),
    Case("image size 0 (not the default)", lambda ws: _train(str(ws.data), ws, "--image-size", "0"), 2, "--image-size must be between 32 and 1024 for lenet; received 0"),
    Case("a batch larger than the training set", lambda ws: _train(str(ws.data), ws, "--batch-size", "64"), 0, "Note: --batch-size 64 is more than the 10 training images"),
    Case("--lr makes the head dense, and says so", lambda ws: ["train", str(ws.data), "--backbone", "resnet50", "--weights", "none", "--image-size", "32", "--lr", "0.01", "--no-augment", "--out", str(ws.fresh("out"))], 0, "Head: dense, trained by gradient descent, instead of the default logistic regression: --lr needs it"),
    Case("image size too small", lambda ws: ["train", str(ws.data), "--backbone", "inceptionv3", "--weights", "none", "--image-size", "64", "--out", str(ws.fresh("out"))], 2, "--image-size must be between 75 and 1024 for inceptionv3"),
    Case("predict --top-k 0", lambda ws: ["predict", str(ws.run), str(ws.data), "--top-k", "0"], 2, "--top-k must be an integer >= 1; received 0"),
    Case("predict --top-k beyond the classes", lambda ws: ["predict", str(ws.run), str(ws.data), "--top-k", "3"], 0, "--top-k 3: the model has 2 classes, so all 2 are shown."),
    Case("evaluate --top-k beyond the classes", lambda ws: ["evaluate", str(ws.run), str(ws.data), "--top-k", "3", "--out", str(ws.fresh("eval"))], 0, "--top-k 3: the model has 2 classes, so all 2 are shown."),
    Case("export --top-k beyond the classes", lambda ws: ["export", str(ws.run), "--out", str(ws.fresh("exp")), "--top-k", "50"], 0, "--top-k 50: the model has 2 classes, so all 2 are shown."),
    Case("--strategy multiworker without TF_CONFIG", lambda ws: _train(str(ws.data), ws, "--strategy", "multiworker"), 2, "TF_CONFIG is not set"),
    Case("--class-weight unknown", lambda ws: _train(str(ws.data), ws, "--class-weight", "balanced"), 2, "Invalid value for '--class-weight'"),
    Case("--mixup with --cached-views", lambda ws: ["train", str(ws.data), "--weights", "none", "--mixup", "0.2", "--cached-views", "4", "--out", str(ws.fresh("out"))], 2, "cannot be combined: drop --cached-views"),
    Case("--cutmix negative", lambda ws: _train(str(ws.data), ws, "--cutmix", "-1"), 2, "--cutmix must be a Beta(a, a) parameter between 0 (off) and 10"),
    Case("lr-find without --out", lambda ws: ["lr-find", str(ws.data), "--backbone", "lenet"], 2, "Missing --out: the folder for lr_find.png"),
    Case("lr-find over a run", lambda ws: ["lr-find", str(ws.data), "--backbone", "lenet", "--out", str(ws.run)], 2, "is an earlier transfer run; --force replaces only an earlier transfer lr-find"),
    Case("cross-validate with more folds than a class has images", lambda ws: ["cross-validate", str(ws.data), "--backbones", "lenet", "--folds", "20", "--out", str(ws.fresh("cv"))], 2, "--folds 20 needs at least 20 usable images of each class; ants has 6, bees has 6"),
    Case("audit without --out", lambda ws: ["audit", str(ws.data), "--backbone", "lenet"], 2, "Missing --out: the folder for audit.csv"),
    Case("audit --folds 1", lambda ws: ["audit", str(ws.data), "--backbone", "lenet", "--folds", "1", "--out", str(ws.fresh("out"))], 2, "--folds must be an integer >= 2; received 1"),
    Case("audit with more folds than a class has images", lambda ws: ["audit", str(ws.data), "--backbone", "lenet", "--folds", "7", "--out", str(ws.fresh("out"))], 2, "--folds 7 needs at least 7 usable images of each class; ants has 6, bees has 6"),
    Case("audit a class with one image", lambda ws: ["audit", str(_data_with(ws, "one-bee", _one_usable_bee)), "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "bees"),
    Case("audit --out inside the data", lambda ws: ["audit", str(ws.data), "--backbone", "lenet", "--out", str(ws.data / "ants" / "audit")], 2, "is inside the data folder"),
    Case("audit --force over a run", lambda ws: ["audit", str(ws.data), "--backbone", "lenet", "--force", "--out", str(ws.copy_of(ws.run, "run-under-audit"))], 2, "is an earlier transfer run; --force replaces only an earlier transfer audit"),
    Case("audit --epochs with a pretrained backbone", lambda ws: ["audit", str(ws.data), "--weights", "none", "--epochs", "5", "--out", str(ws.fresh("out"))], 2, "Received --epochs with the pretrained backbone resnet50; a pretrained backbone is audited by a logistic regression"),
    Case("multi-label manifest with both label and labels", lambda ws: ["train", "--manifest", _manifest(ws, "both.csv", "path,label,labels\n{data}/ants/0.png,ants,ants\n"), "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "has both a label and a labels column"),
    Case("multi-label manifest with an empty label name", lambda ws: ["train", "--manifest", _manifest(ws, "empty-name.csv", "path,labels\n{data}/ants/0.png,ants;;bees\n{data}/ants/1.png,ants\n"), "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "line 2: an empty label name in 'ants;;bees'"),
    Case("multi-label manifest with a path as a label", lambda ws: ["train", "--manifest", _manifest(ws, "path-label.csv", "path,labels\n{data}/ants/0.png,ants;{data}/ants/1.png\n"), "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "a label that is a file path"),
    Case("multi-label manifest with a label twice in a row", lambda ws: ["train", "--manifest", _manifest(ws, "twice.csv", "path,labels\n{data}/ants/0.png,ants;bees;ants\n"), "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "the label 'ants' twice in 'ants;bees;ants'"),
    Case("multi-label manifest listing an image twice", lambda ws: ["train", "--manifest", _manifest(ws, "listed-twice.csv", "path,labels\n{data}/ants/0.png,ants\n{data}/ants/1.png,ants\n{data}/ants/0.png,bees\n"), "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "twice (lines 2 and 4), with labels 'ants' and 'bees'"),
    Case("multi-label label on one image", lambda ws: ["train", "--manifest", _manifest(ws, "one-wasp.csv", "path,labels\n{data}/ants/0.png,ants\n{data}/ants/1.png,ants;wasps\n{data}/ants/2.png,\n"), "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "Label(s) on fewer than 2 usable images"),
    Case("a label column holding several labels", lambda ws: ["train", "--manifest", _manifest(ws, "semicolons.csv", "path,label\n{data}/ants/0.png,ants;bees\n{data}/ants/1.png,ants\n"), "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "For several labels per image, name the column labels"),
    Case("labels separated by commas", lambda ws: ["train", "--manifest", _manifest(ws, "commas.csv", "path,labels\n{data}/ants/0.png,ants,bees\n"), "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "separated by ;, not by commas"),
    Case("probe --draws without --curve", lambda ws: ["probe", str(ws.data), "--backbones", "lenet", "--draws", "3", "--out", str(ws.fresh("out"))], 2, "Received --draws 3 without --curve"),
    Case("probe with no backbone that loads", lambda ws: ["probe", str(ws.data), "--backbones", "resnet50", "--image-size", "32", "--out", str(ws.fresh("out"))], 1, "No backbone could be probed"),
    Case("--multi-label on class folders", lambda ws: _train(str(ws.data), ws, "--multi-label"), 2, "--multi-label reads a manifest with a labels column"),
    Case("--multi-label on a single-label manifest", lambda ws: ["train", "--manifest", _manifest(ws, "single.csv", "path,label\n{data}/ants/0.png,ants\n{data}/ants/1.png,ants\n{data}/bees/0.png,bees\n{data}/bees/1.png,bees\n"), "--multi-label", "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "has one label per image"),
    Case("--class-weight auto on a labels manifest", lambda ws: ["train", "--manifest", _manifest(ws, "weights.csv", "path,labels\n{data}/ants/0.png,ants\n{data}/ants/1.png,ants\n"), "--class-weight", "auto", "--backbone", "lenet", "--out", str(ws.fresh("out"))], 2, "is multi-label (a labels column)"),
    Case("--threshold for a single-label model", lambda ws: ["predict", str(ws.run), str(ws.data / "ants" / "0.png"), "--threshold", "0.5"], 2, "--threshold must be given only for a multi-label model"),
    Case("--min-confidence for a multi-label model", lambda ws: ["predict", str(ws.multi_label_run), str(ws.data / "ants" / "0.png"), "--min-confidence", "0.5"], 2, "given only for a single-label model (this one is multi-label"),
    Case("the report train prints next, for a multi-label run", _next_report, 0, "Report written to"),
    Case("export --top-k for a multi-label run", lambda ws: ["export", str(ws.multi_label_run), "--top-k", "2", "--out", str(ws.fresh("out"))], 2, "--top-k must be left out for a multi-label model"),
    Case("serve --top-k for a multi-label run", lambda ws: ["serve", str(ws.multi_label_run), "--top-k", "2", "--port", "18599"], 2, "--top-k must be left out for a multi-label model"),
    Case("evaluate a single-label run on a multi-label manifest", lambda ws: ["evaluate", str(ws.run), "--manifest", str(ws.multi_label_manifest), "--out", str(ws.fresh("out"))], 2, "is a multi-label manifest (a labels column), but"),
    Case("--threshold out of range", lambda ws: ["predict", str(ws.multi_label_run), str(ws.data / "ants" / "0.png"), "--threshold", "1.5"], 2, "--threshold must be a probability between 0 and 1"),
    Case("probe without --out", lambda ws: ["probe", str(ws.data), "--backbones", "lenet"], 2, "Missing --out: the folder for probe.csv"),
    Case("probe with more folds than a class has images", lambda ws: ["probe", str(ws.data), "--backbones", "lenet", "--folds", "9", "--out", str(ws.fresh("out"))], 2, "--folds 9 needs at least 9 usable images of each class"),
    Case("probe --draws 0", lambda ws: ["probe", str(ws.data), "--backbones", "lenet", "--curve", "--draws", "0", "--out", str(ws.fresh("out"))], 2, "--draws must be an integer >= 1; received 0"),
    Case("probe an unknown backbone", lambda ws: ["probe", str(ws.data), "--backbones", "lenet,resnet5", "--out", str(ws.fresh("out"))], 2, "resnet5"),
    Case("probe --out inside the data", lambda ws: ["probe", str(ws.data), "--backbones", "lenet", "--out", str(ws.data / "bees" / "probe")], 2, "is inside the data folder"),
    Case("probe a multi-label manifest", lambda ws: ["probe", "--manifest", str(ws.multi_label_manifest), "--backbones", "lenet", "--out", str(ws.fresh("out"))], 2, "is multi-label (a labels column); the probe ranks backbones for one label per image"),
    Case("train --backbones without --backbone auto", lambda ws: _train(str(ws.data), ws, "--backbones", "lenet,alexnet"), 2, "--backbones must be given only with --backbone auto"),
    Case("train --backbone auto with an unknown candidate", lambda ws: ["train", str(ws.data), "--backbone", "auto", "--backbones", "lenet,vgg61", "--out", str(ws.fresh("out"))], 2, "vgg61"),
    # Outputs and faults
    Case("output exists, no --force", lambda ws: _train(str(ws.data), ws)[:-1] + [str(ws.run)], 2, "already exists (an earlier transfer run)"),
    Case("export --force over the user's own folder", _export_over_thesis, 2, "not written by transfer (holding config.json, thesis.tex)"),
    Case("export --force over a run", lambda ws: ["export", str(ws.run), "--out", str(ws.copy_of(ws.run, "run-in-the-way")), "--force"], 2, "is an earlier transfer run; --force replaces only an earlier transfer export"),
    Case("report --out over the user's notes", _report_over_notes, 2, "not written by transfer (a file)"),
    Case("visualize --out inside the run's data", lambda ws: ["visualize", str(ws.run), "--out", str(ws.data / "ants" / "vis")], 2, "is inside the data folder"),
    Case("report --out inside the run's data", lambda ws: ["report", str(ws.run), "--out", str(ws.data / "report.html")], 2, "is inside the data folder"),
    Case("train --force over a run that holds the user's data", _data_inside_run, 2, "also holds what transfer did not write (mydata/ants/0.png"),
    Case("report --out an existing folder", lambda ws: ["report", str(ws.run), "--gradcam", "0", "--out", str(_folder(ws, "reports"))], 0, "reports/report.html"),
    Case("report --out in a folder not made yet", lambda ws: ["report", str(ws.run), "--out", str(ws.path("new/dir/report.html")), "--gradcam", "2"], 0, "Report written to"),
    Case("dataset into an existing dataset of the user", lambda ws: ["dataset", "digits", str(ws.data)], 2, "not written by transfer (holding ants, bees)"),
    Case("dataset --force over an earlier one", _dataset_twice, 0, "digits: 1797 images"),
    Case("evaluate twice, with --force", _evaluate_twice, 0, "written to"),
    Case("report --test a folder of other classes", lambda ws: ["report", str(ws.run), "--test", str(_data_with(ws, "wasps", _bees_to_wasps)), "--out", str(ws.fresh("out")) + ".html"], 2, "The data has classes the model was not trained on: wasps."),
    Case("report --test where the run has an evaluation", lambda ws: ["report", str(_evaluated(ws)), "--test", str(ws.data), "--out", str(ws.fresh("out")) + ".html"], 2, "evaluation already exists; --test writes the test folder's evaluation there. Pass --force"),
    Case("evaluate a run on its own training images", lambda ws: ["evaluate", str(ws.run), str(ws.data), "--out", str(ws.fresh("eval"))], 0, "were in the training split"),
    Case("evaluate a run on a copy of its training images", lambda ws: ["evaluate", str(ws.run), str(_copy_tree(ws.data, ws.fresh("copied"))), "--out", str(ws.fresh("eval"))], 0, "were in the training split"),
    Case("evaluate an export: results beside it", lambda ws: ["evaluate", str(ws.export), str(ws.data)], 0, "export-evaluation"),
    Case("an interrupted run is in the way", _interrupted, 2, "An interrupted training of"),
    Case("--resume with nothing to resume", lambda ws: ["train", "--resume", str(ws.path("never"))], 2, "no interrupted training found"),
    Case("--resume with other options", lambda ws: ["train", "--resume", str(ws.path("never")), "--epochs", "3"], 2, "received --epochs as well"),
    # Models
    Case("predict on a folder that is no model", lambda ws: ["predict", str(ws.data), str(ws.data)], 2, "is neither a run directory"),
    Case("predict on a run's model.keras", lambda ws: ["predict", str(ws.run / "model.keras"), str(ws.data)], 2, "is a run's model file: pass its folder"),
    Case("labels.txt does not match the model", _labels_mismatch, 1, "labels.txt lists 3 labels but the model has 2 outputs"),
    Case("corrupt model.keras", _corrupt_model, 1, "Cannot load the model file"),
    Case("corrupt saved_model.pb", _corrupt_savedmodel, 1, "Cannot load the SavedModel"),
    Case("export of a folder that is no run", lambda ws: ["export", str(ws.data), "--out", str(ws.path("exp2"))], 2, "is not a run directory"),
    Case("export of an export", lambda ws: ["export", str(ws.export), "--out", str(ws.path("exp3"))], 1, "is already an export"),
    Case("export --quantize other than LiteRT", lambda ws: ["export", str(ws.run), "--format", "onnx", "--quantize", "int8", "--out", str(ws.path("exp4"))], 2, "--quantize must be given only with --format litert; received 'int8'"),
    Case("export --top-k other than SavedModel", lambda ws: ["export", str(ws.run), "--format", "litert", "--top-k", "1", "--out", str(ws.path("exp5"))], 2, "--top-k must be given only with --format savedmodel"),
    Case("export --min-agreement above 1", lambda ws: ["export", str(ws.run), "--min-agreement", "1.5", "--out", str(ws.path("exp6"))], 2, "--min-agreement must be a share between 0 and 1; received 1.5"),
    Case("export --min-confidence 1", lambda ws: ["export", str(ws.run), "--min-confidence", "1", "--out", str(ws.path("exp7"))], 2, "--min-confidence must be a probability from 0 up to 1 (not included); received 1.0"),
    Case("export imagenet:NAME to LiteRT without images to check on", lambda ws: ["export", "imagenet:resnet50", "--format", "litert", "--out", str(ws.path("exp8"))], 2, "has no validation images to check the export on; pass --images FOLDER"),
    Case("export --images with no image in it", lambda ws: ["export", str(ws.run), "--images", str(_folder(ws, "no-images")), "--out", str(ws.path("exp9"))], 2, "holds no image file to check the export on"),
    Case("predict --min-confidence negative", lambda ws: ["predict", str(ws.run), str(ws.data), "--min-confidence", "-0.5"], 2, "--min-confidence must be a probability from 0 up to 1"),
    Case("predict a .tflite file without its labels.txt", _lone_tflite, 1, "model.tflite needs the labels.txt of its export beside it"),
    Case("export into the run's data folder", lambda ws: ["export", str(ws.run), "--out", str(ws.data / "exported")], 2, "is inside the data folder"),
    Case("serve on port 0", lambda ws: ["serve", str(ws.run), "--port", "0"], 2, "--port must be a TCP port between 1 and 65535; received 0"),
    Case("serve with a model name unfit for a URL", lambda ws: ["serve", str(ws.run), "--model-name", "my model"], 2, "--model-name must be letters, digits"),
    Case("serve with a missing API key file", lambda ws: ["serve", str(ws.run), "--api-key-file", str(ws.path("no-key.txt"))], 2, "--api-key-file"),
    Case("serve with an empty API key file", lambda ws: ["serve", str(ws.run), "--api-key-file", _manifest(ws, "key.txt", "\n")], 2, "must hold one key on one line; it holds nothing"),
    Case("serve on a port in use", _port_in_use, 1, "Cannot listen on 127.0.0.1:"),
    Case("predict on a missing image", lambda ws: ["predict", str(ws.run), str(ws.path("missing.jpg"))], 2, "does not exist"),
    Case("predict where no image decodes", _unreadable_only, 2, "skipped"),
    Case("predict a folder with WebP and TIFF files", _mixed_formats, 0, "TIF images are not read"),
    Case("train --unknown with an unknown detector", lambda ws: _train(str(ws.data), ws, "--unknown", "odin"), 2, "'odin' is not one of 'knn', 'mahalanobis_l2', 'mahalanobis', 'off'"),
    Case("train --unknown-share of a half", lambda ws: _train(str(ws.data), ws, "--unknown-share", "0.5"), 2, "--unknown-share must be a fraction above 0 and below 0.5"),
    Case("train on too few images for a detector", lambda ws: _train(str(ws.data), ws, "--val-split", "0.5"), 0, "the detector is skipped: add images to use it"),
    Case("evaluate --unknown-dir of a run without a detector", lambda ws: ["evaluate", str(ws.run), str(ws.data), "--unknown-dir", str(ws.data), "--out", str(ws.path("ev-unknown"))], 2, "the model has no open-set detector"),
    Case("evaluate --unknown-dir that is not a folder", lambda ws: ["evaluate", str(ws.run), str(ws.data), "--unknown-dir", str(ws.path("nowhere")), "--out", str(ws.path("ev-nowhere"))], 2, "--unknown-dir"),
    Case("train with a class named unknown", lambda ws: _train(str(_data_with(ws, "named-unknown", lambda r: (r / "bees").rename(r / "unknown"))), ws), 0, "a class is named 'unknown'"),
    Case("report --unknown-dir without --test", lambda ws: ["report", str(ws.run), "--unknown-dir", str(ws.data)], 2, "--unknown-dir must be given with --test DIR"),
    # Labelling
    Case("suggest --n 0", lambda ws: ["suggest", str(ws.data), str(ws.data), "--n", "0"], 2, "--n 0: the number of photos to suggest must be 1 or more"),
    Case("suggest --strategy unknown", lambda ws: ["suggest", str(ws.data), str(ws.data), "--strategy", "entropy"], 2, "--strategy entropy: expected one of auto, typiclust, margin, random"),
    Case("suggest from a folder that is neither run nor project", lambda ws: ["suggest", str(ws.data), str(ws.data), "--out", str(ws.fresh("next")) + ".csv"], 2, "is neither a run directory (no model.keras) nor a labelling project"),
    Case("suggest --out over a file it did not write", lambda ws: ["suggest", str(ws.data), str(ws.data), "--out", _manifest(ws, "mine.csv", "a,b\n")], 2, "was not written by transfer suggest"),
    Case("suggest from a project whose labels.csv lacks path,label", _project_without_columns, 2, "expected path,label"),
    Case("label PHOTOS that is not a folder", lambda ws: ["label", str(ws.path("no-photos")), "--out", str(ws.fresh("project"))], 2, "is not a folder; give the folder of photos to label"),
    Case("label --out a folder of other files", lambda ws: ["label", str(ws.data), "--out", str(ws.data)], 2, "exists and is not a labelling project"),
    Case("label --port out of range", lambda ws: ["label", str(ws.data), "--out", str(ws.fresh("project")), "--port", "0"], 2, "--port"),
]


def answer(output: str, fragment: str) -> str:
    """The line of `output` the case is about: the error, or the matching report line."""
    lines = [line.strip(" │") for line in output.splitlines() if line.strip(" │")]  # no Typer box
    for line in lines:
        if line.startswith("error:") or fragment in line:
            return line
    return lines[0] if lines else ""


def main() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TERMINAL_WIDTH", "200")
    from typer.testing import CliRunner

    from transfer.cli import app

    runner = CliRunner()
    print("| case | exit code | first line the user sees |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        for case in CASES:
            result = runner.invoke(app, case.argv(ws))
            line = answer(result.output, case.fragment).replace(tmp, "…").replace("|", "\\|")
            print(f"| {case.name} | {result.exit_code} | `{line}` |", flush=True)


if __name__ == "__main__":
    main()
