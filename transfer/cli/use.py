"""The commands that use a model: `predict`, `evaluate`, `report`, `visualize`, `features`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from transfer.cli.app import app, fail, messages, results, user_errors
from transfer.cli.parameters import CacheDir, OutputFormat, PreprocessMode
from transfer.cli.printers import PredictionPrinter, RichReporter, print_evaluation


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="A run directory, an export (SavedModel folder, .tflite or .onnx), or imagenet:resnet50|vgg16|inceptionv3 (the ImageNet classifier as it comes).")],
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    top_k: Annotated[Optional[int], typer.Option(help="Labels per image, most probable first (multi-label: every label above its threshold, and the top k). Default: min(3, classes).")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="table | csv | json on stdout (csv and json are written as each batch is scored).")] = OutputFormat.table,
    batch_size: Annotated[int, typer.Option(help="Images decoded and scored at a time.")] = 32,
    min_confidence: Annotated[Optional[float], typer.Option(help="The answer is 'unknown' where the top probability is below this. Default: the export's, else 0.", show_default=False)] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Multi-label models: give every label whose probability reaches this. Default: each label's threshold, chosen on the validation split.", show_default=False)] = None,
    weights: Annotated[Optional[str], typer.Option(help="With imagenet:NAME: PATH to its include_top weights file. Default: downloaded by Keras.", show_default=False)] = None,
) -> None:
    """Top-k labels with probabilities per image.

    Prints the most probable labels of each image file or folder given.

    Example: transfer predict runs/photos photo.jpg
    """
    from transfer.evaluation.prediction import novelty_threshold, predict as run_prediction

    printer = PredictionPrinter(format)
    with user_errors():
        try:
            predictions = run_prediction(
                model, paths, top_k=top_k, batch_size=batch_size, min_confidence=min_confidence, threshold=threshold, weights=weights,
                reporter=RichReporter(),
            )
            for prediction in predictions:
                if not printer.count:  # the model is open by now: its detector's threshold, for the table's heading
                    printer.threshold = novelty_threshold(model)
                printer.add(prediction)
        finally:
            printer.close()  # what was scored is shown, also after Ctrl-C
    if printer.count and printer.failed == printer.count:
        fail(f"none of the {printer.count} file(s) could be read as an image (each is named above with its reason).", 2)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="A run directory or an export (SavedModel folder, .tflite or .onnx).")],
    data_dir: Annotated[Optional[Path], typer.Argument(help="Folder with one subfolder of labelled images per class (or --manifest).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for metrics, confusion matrix and errors. Default: RUN/evaluation, or NAME-evaluation beside an export.", show_default=False)] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="CSV file of labelled images instead of DATA_DIR: path,label, or path,labels for a multi-label model.", show_default=False)] = None,
    top_k: Annotated[Optional[int], typer.Option(help="k of the top-k accuracy. Default: min(3, classes).")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Multi-label models: one threshold for every label. Default: each label's, chosen on the validation split.", show_default=False)] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average the softmax over 5 crops and their mirror images (multi-crop testing).")] = False,
    batch_size: Annotated[int, typer.Option(help="Images decoded and scored at a time.")] = 32,
    unknown_dir: Annotated[Optional[Path], typer.Option(help="A folder of images outside the model's classes (any layout): how well its open-set detector tells them from DATA_DIR's (AUROC, the share of each answered unknown), in unknown.csv and unknown.png.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier evaluation written by transfer (nothing else).")] = False,
) -> None:
    """Metrics and errors on labelled images.

    Accuracy, top-k, log loss, per-class precision/recall/F1, confusion matrix and errors on DATA_DIR.

    Example: transfer evaluate runs/photos test_photos/
    """
    with user_errors():
        from transfer.core.errors import InvalidOptionError
        from transfer.evaluation.evaluate import Scoring, evaluate_folder

        if (data_dir is None) == (manifest is None):
            raise InvalidOptionError("Give the labelled images as DATA_DIR (class folders) or --manifest FILE.csv, one of them.")
        evaluation, path = evaluate_folder(model, manifest or data_dir, out, scoring=Scoring(top_k, threshold, tta, batch_size, unknown_dir),
                                           force=force, reporter=RichReporter())
    print_evaluation(evaluation)
    results.print(f"Metrics, confusion matrix and errors written to {path}", highlight=False)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `transfer train`.")],
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="HTML file to write, or a folder (ending in /) to write report.html into. Default: RUN_DIR/report.html.", show_default=False)] = None,
    test: Annotated[Optional[Path], typer.Option(help="Labelled images the run never saw (class folders, or a CSV manifest): their metrics, confusion matrix, reliability and errors beside validation's, the evaluation also written to RUN_DIR/evaluation.", show_default=False)] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Evaluate with multi-crop test-time augmentation.")] = False,
    unknown_dir: Annotated[Optional[Path], typer.Option(help="With --test: a folder of images outside the run's classes; the page shows their novelty scores beside the test images' and how many of each are answered unknown.", show_default=False)] = None,
    errors: Annotated[int, typer.Option(help="How many of the most confident errors to show.")] = 12,
    gradcam: Annotated[int, typer.Option(help="How many validation images to show Grad-CAM heatmaps for.")] = 8,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier report (and with --test, evaluation) written by transfer (nothing else).")] = False,
) -> None:
    """One self-contained HTML report of a run.

    report.html: configuration, data, curves, metrics, errors, Grad-CAM; with --test, the same on a test folder.

    Example: transfer report runs/photos --test test_photos/
    """
    with user_errors():
        from transfer.evaluation.evaluate import Scoring
        from transfer.reports.report import report as write_report

        path = write_report(run_dir, out, test=test, scoring=Scoring(tta=tta, unknown_dir=unknown_dir), errors=errors, gradcam=gradcam,
                            force=force, reporter=RichReporter())
    results.print(f"Report written to {path}", highlight=False)


@app.command()
def visualize(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `transfer train`.")],
    image: Annotated[Optional[Path], typer.Option(help="Image for the feature maps. Default: the run's first validation image.", show_default=False)] = None,
    layers: Annotated[Optional[str], typer.Option(help="Comma-separated backbone layers for feature maps. Default: the first and last convolutions.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder to write to. Default: RUN_DIR/visualize.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier visualization written by transfer (nothing else).")] = False,
) -> None:
    """Draw a run's filters and feature maps as PNG.

    The first convolution's filters and the feature maps of chosen layers, as PNG grids.

    Example: transfer visualize runs/photos
    """
    with user_errors():
        from transfer.reports.visualize import visualize as run_visualize

        names = [name.strip() for name in layers.split(",") if name.strip()] if layers else []
        paths = run_visualize(run_dir, out, image=image, layers=names, force=force)
    for path in paths:
        results.print(f"wrote {path}", highlight=False)


@app.command()
def features(
    model: Annotated[str, typer.Argument(help="A run directory, imagenet:resnet50|vgg16|inceptionv3 (the backbone without its top), a Keras model file PATH.keras or keras-hub:PRESET.")],
    data_dir: Annotated[Path, typer.Argument(help="Folder with one subfolder of images per class.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Parquet file to write (.parquet): path, label, f0000, f0001, ...; or a folder (ending in /) to write features.parquet into.")],
    weights: Annotated[Optional[str], typer.Option(help="With imagenet:NAME: PATH to its weights file without top. Default: downloaded by Keras.", show_default=False)] = None,
    preprocess: Annotated[Optional[PreprocessMode], typer.Option(help="With PATH.keras: none (the model preprocesses raw RGB in [0, 255] itself) | caffe | tf | torch. Default: none.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(help="Images decoded and scored at a time.")] = 32,
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier features file written by transfer (nothing else).")] = False,
) -> None:
    """Write backbone features of images as Parquet.

    Each image's pooled backbone features, for pandas and scikit-learn.

    Example: transfer features imagenet:resnet50 photos/ --out features.parquet
    """
    with user_errors():
        from transfer.deploy.feature_files import FeatureSource, write_features

        source = FeatureSource(model, weights=weights, preprocess=preprocess.value if preprocess else None)
        table = write_features(source, data_dir, out, batch_size=batch_size, cache_dir=cache_dir,
                               force=force, reporter=RichReporter())
    for row in table.attrs["skipped"].itertuples():
        messages.print(f"[yellow]skipped {escape(f'{row.path}: {row.reason}')}[/yellow]", highlight=False)
    width = sum(column.startswith("f") for column in table.columns)
    results.print(f"{len(table)} images x {width} features written to {table.attrs['path']}", highlight=False)
