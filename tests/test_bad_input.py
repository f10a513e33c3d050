"""Messy image folders, manifests, bad options and damaged models: clear answers, nothing lost."""

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.cli_cases import CASES, Workspace, answer
from tests.helpers import image_folder, write_png
from transfer.cli import app


runner = CliRunner()


# --- Decoding: every kind of file a camera or an export tool writes ---------------------------


# --- Folders: names, links, nesting, unreadable files ----------------------------------------


@pytest.mark.slow  # trains or loads a model through the CLI
def test_names_with_spaces_and_non_ascii_train_and_predict(tmp_path):
    root = tmp_path / "données photo"
    for i, name in enumerate(["abeille été", "fourmi 蟻"]):
        for j in range(4):
            write_png(root / name / f"image n°{j} ü.png", color=(200 * i, 40 * j, 50))
    run = tmp_path / "run é"
    result = runner.invoke(app, ["train", str(root), "--backbone", "lenet", "--epochs", "1", "--val-split", "0.5", "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "labels.txt").read_text().splitlines() == ["abeille été", "fourmi 蟻"]
    predicted = runner.invoke(app, ["predict", str(run), str(root / "fourmi 蟻"), "--format", "csv"])
    assert predicted.exit_code == 0 and predicted.stdout.count("image n°") == 8  # 4 images x top 2


# --- Duplicates and imbalance -----------------------------------------------------------------


@pytest.mark.slow  # trains or loads a model through the CLI
def test_class_weight_auto_is_used_and_recorded(tmp_path):
    root = image_folder(tmp_path / "data", per_class=4)
    image_folder(root, classes=("bees",), per_class=12)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(root), "--backbone", "lenet", "--epochs", "1", "--class-weight", "auto", "--out", str(run)])
    assert result.exit_code == 0, result.output
    # 20% of 4 ants and 12 bees held out: 1 and 2, so 3 and 10 train (N = 13): 13 / (2 * 3), 13 / (2 * 10).
    assert "Class weights (balanced): ants 2.167, bees 0.650" in result.output
    import json

    assert json.loads((run / "config.json").read_text())["class_weights"] == {"0": pytest.approx(13 / 6), "1": 0.65}


# --- Manifests --------------------------------------------------------------------------------


@pytest.mark.slow  # trains or loads a model through the CLI
def test_manifest_trains_through_the_cli_with_a_stratified_split(tmp_path):
    image_folder(tmp_path / "images", per_class=4)
    rows = [f"{tmp_path}/images/{c}/{j}.png,{c}" for c in ("ants", "bees") for j in range(4)]
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--manifest", str(tmp_path / "list.csv"), "--backbone", "lenet", "--epochs", "1", "--val-split", "0.5", "--out", str(run)])
    assert result.exit_code == 0, result.output
    split = pd.read_csv(run / "split.csv")
    assert split.groupby(["label", "split"]).size().to_dict() == {("ants", "train"): 2, ("ants", "val"): 2, ("bees", "train"): 2, ("bees", "val"): 2}


# --- The command line, case by case (the table in tests/cli_cases.py) -------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("cases"))


class _Looking(Workspace):
    """A workspace that only notes whether a case's command line needs a trained model (nothing is made)."""

    needs_model = False

    def _model(self, name: str) -> Path:
        self.needs_model = True
        return self.root / name

    run = property(lambda self: self._model("run"))
    multi_label_run = property(lambda self: self._model("multi-label-run"))
    export = property(lambda self: self._model("export"))


def _answers_before_training(case) -> bool:
    """An error case whose command line needs no trained run or export: it is answered by the checks
    before the long work (options, paths, data listed), so it belongs to `make test-quick` too."""
    import tempfile

    if case.exit_code == 0:
        return False
    with tempfile.TemporaryDirectory() as root:
        looking = _Looking(Path(root))
        try:
            case.argv(looking)
        except Exception:  # the case builds from a dataset or a run it needs made: not quick
            return False
        return not looking.needs_model


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.quick if _answers_before_training(case) else pytest.mark.slow, id=case.name)
    for case in CASES
])
def test_cli_case(case, workspace):
    before = sorted(p.name for p in workspace.root.iterdir())
    result = runner.invoke(app, case.argv(workspace))
    assert result.exit_code == case.exit_code, result.output
    assert case.fragment in answer(result.output, case.fragment), result.output
    assert "Traceback" not in result.output
    if case.exit_code == 2 and not any(started in result.output for started in ("━", "Strategy:")):
        assert result.output.lstrip().startswith("error:"), "an option or parsing error is the first line the user sees"
    if case.exit_code:
        created = set(p.name for p in workspace.root.iterdir()) - set(before)
        assert not {n for n in created if n.startswith(("out-", ".out-"))}, "a failed command wrote an output"


@pytest.mark.slow  # trains or loads a model through the CLI
@pytest.mark.parametrize("format", ["csv", "json"])
def test_a_predict_that_fails_writes_nothing_to_stdout(workspace, format):
    """`predict ... --format csv > preds.csv` that fails must not leave a header-only file (or `[]`)."""
    result = runner.invoke(app, ["predict", str(workspace.run), str(workspace.path("nothing-here")), "--format", format])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert result.stdout == ""
    scored = runner.invoke(app, ["predict", str(workspace.run), str(workspace.data / "ants"), "--format", format])
    assert scored.exit_code == 0 and "\r" not in scored.stdout
    if format == "csv":
        assert scored.stdout.splitlines()[0] == "path,rank,label,probability,answer,error,novelty,why_unknown"
    else:
        assert len(json.loads(scored.stdout)) == len(list((workspace.data / "ants").iterdir()))
