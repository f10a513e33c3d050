"""`transfer report RUN_DIR`: one self-contained `report.html` about a training run.

The page embeds every image as a data URI, so it can be mailed or archived as a single file. It
shows the configuration, the data (images per class, skipped files, duplicates), the training
curves, the metrics, confusion matrix and reliability diagram of the model on the run's validation
split (evaluated now, as `transfer evaluate` does), the most confident errors with their top-3
predictions, and Grad-CAM heatmaps over a few validation images. With `test`, a folder of labelled
images the run never saw, the same sections again on it, after validation's: that folder is
evaluated by `transfer.evaluation.evaluate.evaluate_folder` (its files written to RUN_DIR/evaluation,
as `transfer evaluate RUN_DIR DIR` writes them), and the headline numbers of both stand side by side.
A head refit on every image (`--refit`) is shown as its metrics were measured: from the out-of-fold
probabilities of its cross-validated estimate (`out_of_fold.csv`), said as such.
"""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from transfer.outputs import artifacts, layout, publishing
from transfer.reports import pages
from transfer.reports.novelty import novelty_section
from transfer.reports.visualize import gradcam_figure
from transfer.core.errors import ModelLoadError, OutputExistsError, require
from transfer.evaluation.evaluate import Evaluation, Scoring, evaluate, evaluate_folder, evaluation_pictures
from transfer.core.progress import SILENT, Reporter
from transfer.models.saving import run_transfers


def report(
    run_dir: Path,
    out_file: Path | None = None,
    *,
    test: Path | None = None,
    scoring: Scoring = Scoring(),
    errors: int = 12,
    gradcam: int = 8,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> Path:
    """Writes the report of the run at `run_dir` to `out_file` (default RUN_DIR/report.html).

    Args:
        test: a folder of labelled images (or a CSV manifest) to evaluate the model on as well, its
            sections beside validation's; its evaluation is also written to RUN_DIR/evaluation.
        scoring: how `test` is evaluated: test-time augmentation (`tta`, also for validation), and images
            outside the classes (`unknown_dir`) for the open-set detector (`transfer.evaluation.evaluate`).
        errors: how many of the most confident errors to show.
        gradcam: how many validation images to show Grad-CAM heatmaps for.
        force: replace an earlier report (a file this tool wrote, and nothing else), and with `test`
            an earlier evaluation in RUN_DIR/evaluation.

    Raises:
        DataError: `test` holds classes the run was not trained on, or no image that can be read.
    """
    run_dir = Path(run_dir)
    out_file = publishing.output_file(out_file, name=layout.REPORT, suffixes=(".html", ".htm")) if out_file is not None else run_dir / layout.REPORT
    run = artifacts.Run.open(run_dir)
    publishing.check_destination(out_file, kind="report", force=force, data=tuple(artifacts.data_folders(run_dir)))
    split, config = run.split(), run.config()
    if not config:
        raise ModelLoadError(f"{run_dir} lacks {layout.CONFIG}; a report needs a run directory written by `transfer train`.")
    tested, tta = None, scoring.tta
    require(scoring.unknown_dir is None or test is not None, "--unknown-dir", str(scoring.unknown_dir), "given with --test DIR (the "
            "in-class images it is told from)")
    if test is not None:  # first: a folder of the wrong classes fails before any other work
        written = artifacts.default_evaluation_dir(run_dir)
        if written.exists() and not force:
            raise OutputExistsError(f"{written} already exists; --test writes the test folder's evaluation there. Pass "
                                    f"--force to replace an earlier one written by transfer (and the report).")
        measured, folder = evaluate_folder(run_dir, test, scoring=scoring, force=force, reporter=reporter)
        tested = Shown(f"test: {test}, {measured.summary['num_images']} images", measured, folder, test=True)
        reporter.message(f"Test {test}: {HEADLINE[measured.multi_label].replace('_', ' ')} {measured.summary[HEADLINE[measured.multi_label]]:.4f} "
                         f"on {measured.summary['num_images']} images (its files in {folder}).")
    refit = bool(config.get("refit")) and (run.path / layout.OUT_OF_FOLD_CSV).is_file()
    if refit and tta:
        reporter.message("--tta: not applied to the estimate; the run's head saw every image, so the report shows its out-of-fold estimate.")
    evaluation = _out_of_fold(run, config) if refit else evaluate(run_dir, run.validation_images(), tta=tta, reporter=reporter)
    estimated = "cross-validated, out of fold, before the refit on every image" if refit else "validation split"

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        evaluation_pictures(evaluation)(scratch)
        shown = Shown(estimated, evaluation, scratch)
        heatmaps = gradcam_figure(run, config, evaluation, gradcam, scratch / "gradcam.png")
        sections = [
            _summary(run_dir, config, evaluation, tested),
            pages.section("Data", _data(run, split, evaluation.multi_label, refit)),
            *_training_sections(run, config, scratch),
            *_evaluation_sections(config, shown, errors),
            *(_evaluation_sections(config, tested, errors, beside=shown) if tested else []),
            novelty_section(run, tested, scratch),
            pages.section("Where the model looked (Grad-CAM)", heatmaps),
            *([pages.section("How the backbone was chosen (--backbone auto)", _probe(config["probe"]))] if config.get("probe") else []),
            pages.section("Configuration", _config(config)),
        ]
        page = pages.page(f"transfer report: {run_dir.name}", "\n".join(sections), generator=layout.REPORT_GENERATOR)
    publishing.write_text(out_file, page)
    return out_file


def _out_of_fold(run: artifacts.Run, config: dict) -> Evaluation:
    """A refit run's cross-validated estimate as an evaluation: each image's probabilities from the
    fit that did not see it (`out_of_fold.csv`), scaled by the run's temperature as its metrics are."""
    from transfer.evaluation.evaluate import measure
    from transfer.metrics.calibration import scale

    table = publishing.read_table(run.path / layout.OUT_OF_FOLD_CSV)
    names = config["class_names"]
    scores = table[[f"p:{name}" for name in names]].to_numpy(dtype=np.float64)
    if config.get("temperature") not in (None, 1.0):
        scores = scale(scores, config["temperature"])
    return measure(names, table["path"].tolist(), scores, table["label"].tolist())


#: The options only training by gradient descent uses: a logistic head without fine-tuning uses none of them.
GRADIENT_OPTIONS = ("epochs", "lr", "optimizer", "schedule", "patience", "label_smoothing", "mixup", "cutmix",
                    "dropout", "augment", "flip", "cached_views")


def _closed_form(config: dict) -> bool:
    """Whether the run trained nothing by gradient descent: a logistic head, no fine-tuning."""
    return config.get("head") == "logistic" and not config.get("finetune_epochs")


def _training_sections(run: artifacts.Run, config: dict, scratch: Path) -> list[str]:
    """How the model was trained: the logistic fit of a logistic head (C, folds, the held-out loss
    per C), and the curves of the epochs trained by gradient descent, where there were any."""
    sections = []
    if config.get("head") == "logistic" and config.get("logistic"):
        history = pd.read_csv(run.path / layout.HISTORY)
        sections.append(pages.section("How the head was fitted (logistic regression)", _logistic(config, history, scratch)))
    if not _closed_form(config):
        sections.append(pages.section("Training curves", pages.image(run.path / layout.CURVES, "training curves")))
    return sections


def _logistic(config: dict, history: pd.DataFrame, scratch: Path) -> str:
    """The logistic fit: what it is, the C chosen and how, the held-out log loss per C, its scores."""
    from transfer.outputs.figures import plot_logistic_fit

    fit = config["logistic"]
    multi = isinstance(fit["C"], list)  # multi-label: one regression per label
    what = "sigmoid outputs are logistic regressions, one per label," if multi else "softmax layer is a logistic regression"
    refit = bool(fit.get("refit"))
    parts = [f"<p>The head's {what} fitted in closed form (scikit-learn, L-BFGS) on the "
             f"backbone's pooled features of the {'training and validation images (refit on every image, after the cross-validated estimate below)' if refit else 'training images'}, each feature standardized: no epochs, learning rate "
             "or optimizer" + (" (the fine-tuning after it trained by gradient descent)." if config.get("finetune_epochs") else ".")
             + " Its inverse regularization strength C (smaller: stronger) is chosen " + (
                 f"among {len(fit['Cs'])} values from {min(fit['Cs']):.0e} to {max(fit['Cs']):.0e} " if fit.get("Cs") else "")
             + f"by the held-out log loss of a stratified cross-validation on {'them' if refit else 'the training split'}.</p>"]
    if multi:
        names = config.get("class_names") or [str(i) for i in range(len(fit["C"]))]
        rows = "".join(f"<tr><th>{html.escape(str(name))}</th><td>{'constant (on every or no training image)' if c is None else f'{c:.3g}'}</td>"
                       f"<td>{folds if c is not None else ''}</td></tr>" for name, c, folds in zip(names, fit["C"], fit["folds"]))
        parts.append(f"<table class=numbers><tr><th>label</th><th>C</th><th>folds</th></tr>{rows}</table>")
    elif fit["folds"] < 2:
        parts.append(f"<p>No cross-validation was possible (a class has a single training image): C = {fit['C']:.3g}.</p>")
    else:
        parts.append(f"<p>C = <b>{fit['C']:.3g}</b>, chosen by {fit['folds']}-fold cross-validation.</p>")
        if fit.get("Cs"):
            plot_logistic_fit(fit["Cs"], fit["cv_log_loss"], fit["C"], fit["folds"], scratch / "logistic.png")
            parts.append(pages.image(scratch / "logistic.png", "held-out log loss per C"))
    row = history[history["stage"] == "logistic"] if "stage" in history else history.head(1)
    if len(row):
        scores = row.iloc[0]
        accuracy = "yes/no decisions right at 0.5" if multi else "accuracy"
        parts.append(f"<table class=numbers><tr><th></th><th>{accuracy}</th><th>log loss</th></tr>"
                     f"<tr><th>{'every image (the fit)' if refit else 'training split'}</th><td>{scores['accuracy']:.3f}</td><td>{scores['loss']:.4f}</td></tr>"
                     f"<tr><th>{'cross-validated (out of fold)' if refit else 'validation split'}</th><td>{scores['val_accuracy']:.3f}</td><td>{scores['val_loss']:.4f}</td></tr></table>")
    return "\n".join(parts)


def _weights_of(config: dict) -> str:
    if config.get("source_run"):
        return "of the source run"
    return "its own" if config.get("weights") == config.get("backbone") else str(config.get("weights"))


@dataclass(frozen=True)
class Shown:
    """An evaluation the page shows: on what (`where`, words for the headings), the pictures
    `evaluation_pictures` drew into `folder`, and whether it is a test folder (that chose nothing)."""

    where: str
    evaluation: Evaluation
    folder: Path
    test: bool = False


def _evaluation_sections(config: dict, shown: Shown, errors: int, beside: Shown | None = None) -> list[str]:
    """The metrics, the pictures and the most confident errors of one evaluation; a test folder's
    metrics open with its headline numbers beside validation's (`beside`)."""
    evaluation, where = shown.evaluation, shown.where
    numbers = _side_by_side(beside, evaluation) if beside is not None else ""
    worst = f"Most confident errors ({where}: {min(errors, len(evaluation.errors))} of {len(evaluation.errors)})"
    numbers += "<h3>Per class</h3>" if numbers else ""
    return [pages.section(f"Metrics ({where})", numbers + _metrics(evaluation)),
            *(_multi_label_sections(shown) if evaluation.multi_label else _single_label_sections(config, shown)),
            pages.section(worst, _errors(evaluation, errors))]


def _side_by_side(beside: Shown, test: Evaluation) -> str:
    """The headline numbers of validation (or the out-of-fold estimate) and of the test folder, one column each."""
    validation = beside.evaluation
    names = ({"mean_average_precision": "mean average precision", "exact_match": "exact label sets", "micro_f1": "micro F1"}
             if test.multi_label else {"accuracy": "accuracy", "top_k_accuracy": f"top-{test.summary['top_k']} accuracy", "ece": "ECE"})
    names.update(macro_f1="macro F1", log_loss="log loss", num_images="images")

    def cell(value) -> str:
        return "" if value is None else (f"{value:d}" if isinstance(value, int) else f"{value:.4f}")

    rows = "".join(f'<tr id="compare-{key}"><th>{html.escape(name)}</th><td>{cell(validation.summary.get(key))}</td>'
                   f'<td>{cell(test.summary.get(key))}</td></tr>' for key, name in names.items())
    return f'<table class="numbers"><tr><th></th><th>{html.escape(beside.where)}</th><th>test</th></tr>{rows}</table>'


def _single_label_sections(config: dict, shown: Shown) -> list[str]:
    """The confusion matrix and the reliability diagram."""
    picture = pages.image(shown.folder / layout.CONFUSION_PNG, f"confusion matrix ({shown.where})")
    return [pages.section(f"Confusion matrix ({shown.where})", picture),
            pages.section(f"Are the probabilities right? Reliability ({shown.where})", _calibration(config, shown))]


def _multi_label_sections(shown: Shown) -> list[str]:
    """Each label's precision-recall curve with its threshold, and each label's right and wrong decisions."""
    text = ("<p>Each label's precision and recall as its threshold moves; the dot is the threshold the run chose on "
            "the validation split (the best F1 of that label), which predict, evaluate, every export and the server apply. "
            + ("Measured on images that chose nothing.</p>" if shown.test else
               "Measured on the split that chose the thresholds, so it flatters the model a little.</p>"))
    picture = pages.image(shown.folder / layout.PRECISION_RECALL_PNG, f"precision-recall curves ({shown.where})")
    return [pages.section(f"Precision and recall per label ({shown.where})", text + picture),
            pages.section(f"Decisions per label ({shown.where})", shown.evaluation.confusion.to_html(classes="numbers", border=0))]


#: The headline number of a single-label (False) and a multi-label (True) evaluation.
HEADLINE = {False: "accuracy", True: "mean_average_precision"}


def _summary(run_dir: Path, config: dict, evaluation: Evaluation, tested: Shown | None = None) -> str:
    """The page's header: the headline number (validation accuracy, or a multi-label run's mAP), the
    test folder's under it, and the facts."""
    s = evaluation.summary
    if evaluation.multi_label:
        facts = {
            "backbone": f"{config.get('backbone')} (weights {_weights_of(config)})",
            "labels": f"{len(evaluation.class_names)}, any number per image (multi-label: one sigmoid each)",
            "validation images": f"{s['num_images']} ({s['images_without_label']} without a label)",
            "exact label sets": f"{s['exact_match']:.1%}",
            "micro F1": f"{s['micro_f1']:.3f}", "macro F1": f"{s['macro_f1']:.3f}",
            "log loss (per label)": f"{s['log_loss']:.4f}",
        }
        caption = "validation mean average precision"
    else:
        mode = "scratch" if not run_transfers(config) else ("fine-tuned" if config.get("finetune_epochs") else "frozen")
        source = config.get("source_run")
        facts = {
            "backbone": f"{config.get('backbone')} ({mode}, weights {_weights_of(config)})",
            **({"backbone file SHA-256": config["backbone_sha256"]} if config.get("backbone_sha256") else {}),
            **({"source run": f"{source['path']} (model.keras SHA-256 {source['model_sha256'][:12]}…)"} if source else {}),
            ("images, cross-validated" if config.get("refit") else "validation images"): f"{s['num_images']}" + (f" ({s['num_skipped']} unreadable)" if s["num_skipped"] else ""),
            f"top-{s['top_k']} accuracy": f"{s['top_k_accuracy']:.1%}",
            "log loss": f"{s['log_loss']:.4f}",
            "macro F1": f"{s['macro_f1']:.3f}",
            "test-time augmentation": "on (multi-crop and flips, averaged)" if s["tta"] else "off",
        }
        caption = ("cross-validated accuracy (out of fold; the head was then refit on every image)"
                   if config.get("refit") else "validation accuracy")
    headline = s[HEADLINE[evaluation.multi_label]]
    test = ""
    if tested is not None:
        measured = tested.evaluation.summary
        seen = (f"; {measured['num_training_images']} of them in the training split, so the test numbers overstate"
                if measured.get("num_training_images") else "")
        facts["test images"] = f"{measured['num_images']} ({measured['num_skipped']} skipped{seen}); the evaluation's files in {tested.folder}"
        test = (f'<p class="headline"><span id="test-accuracy">{measured[HEADLINE[evaluation.multi_label]]:.1%}</span> '
                f'{"test mean average precision" if evaluation.multi_label else "test accuracy"} ({html.escape(tested.where)})</p>')
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items())
    return (
        f'<header><h1>{html.escape(run_dir.name)}</h1>'
        f'<p class="headline"><span id="accuracy">{headline:.1%}</span> {caption}</p>{test}'
        f"<table class=facts>{rows}</table></header>"
    )


def _calibration(config: dict, shown: Shown) -> str:
    """The reliability diagram, the ECE, and what temperature the run built in."""
    evaluation = shown.evaluation
    temperature = config.get("temperature")
    built = (f"The run divides its logits by a temperature of {temperature:.3g}, fitted on these {'out-of-fold probabilities' if config.get('refit') else 'images'} after training "
             f"(it changes no prediction)." if temperature not in (None, 1.0) else
             "The run has no temperature built in (`--calibrate none`, a fit that would not have helped, or a run "
             "trained before calibration).")
    text = (f"<p>Expected calibration error {evaluation.summary['ece']:.3f}: of the images given a probability near "
            f"0.9, about 90% should be right; each bar is the accuracy of the images whose top probability falls in "
            f"its bin (the number on it: how many). {html.escape(built)} "
            + ("Measured on images that chose nothing.</p>" if shown.test else
               f"Measured on the {'out-of-fold probabilities' if config.get('refit') else 'validation split'} that also "
               f"chose the temperature, so it flatters the model a little.</p>"))
    return text + pages.image(shown.folder / layout.RELIABILITY_PNG, f"reliability diagram ({shown.where})")


def _data(run: artifacts.Run, split: pd.DataFrame, multi_label: bool = False, refit: bool = False) -> str:
    from transfer.data.folders import label_rows

    counts = pd.crosstab(*label_rows(split, multi_label)).reindex(columns=["train", "val"], fill_value=0)  # multi-label: images per label
    parts = [counts.to_html(classes="numbers", border=0)]
    if refit and (split["split"] == "val").any():
        parts.append("<p>The head was refit on every one of them (<code>--refit</code>): the validation images trained "
                     "the final model too, and its metrics are a cross-validated estimate made before the refit.</p>")
    skipped = run.skipped()
    if len(skipped):
        parts.append(f"<h3>Skipped files ({len(skipped)})</h3>" + skipped.head(100).to_html(index=False, border=0))
    else:
        parts.append("<p>No file was skipped.</p>")
    duplicates = run.duplicates()
    if len(duplicates):
        parts.append(f"<h3>Validation images that copy training images ({len(duplicates)})</h3>"
                     + duplicates.head(50).to_html(index=False, border=0))
    return "\n".join(parts)


def _metrics(evaluation: Evaluation) -> str:
    return evaluation.per_class.to_html(classes="numbers", border=0, float_format=lambda v: f"{v:.3f}", na_rep="")


def _errors(evaluation: Evaluation, count: int) -> str:
    worst = evaluation.errors.head(count)
    if worst.empty:
        return "<p>No image was misclassified.</p>"
    cards = []
    for row in worst.itertuples():
        top = "".join(f"<li>{html.escape(item)}</li>" for item in row.top.split("; "))
        cards.append(
            f'<figure class="card">{pages.thumbnail(row.path)}<figcaption><b>true: {html.escape(row.label or "(none)")}</b>'
            + (f"<br>predicted: {html.escape(row.predicted or '(none)')}" if evaluation.multi_label else "")
            + f"<ol>{top}</ol><small>{html.escape(Path(row.path).name)}</small></figcaption></figure>"
        )
    return f'<div class="grid">{"".join(cards)}</div>'


def _probe(probe: dict) -> str:
    """The candidates ranked by the probe (`transfer.selection.probe`), the winner trained."""
    table = pd.DataFrame(probe["ranking"])[["backbone", "accuracy", "accuracy_sd", "log_me", "feature_size", "error"]]
    return (f"<p>{html.escape(str(probe['best']))} won the linear probe on frozen features and was trained. A probe is "
            f"an estimate, not the fine-tuned result.</p>"
            + table.to_html(index=False, border=0, classes="numbers", float_format=lambda v: f"{v:.3f}", na_rep=""))


def _config(config: dict) -> str:
    """Every option as recorded; those a logistic head without fine-tuning never used, in one row of their own."""
    unused = [k for k in GRADIENT_OPTIONS if k in config] if _closed_form(config) else []
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in sorted(config.items()) if k != "class_names" and k not in unused
    )
    if unused:
        values = ", ".join(f"{k} {config[k]}" for k in unused)
        rows = (f"<tr><th>not used</th><td>{html.escape(values)} (the head was fitted in closed form; nothing was "
                f"trained by gradient descent)</td></tr>") + rows
    return f"<table class=facts>{rows}</table>"
