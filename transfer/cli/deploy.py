"""The commands that ship a model: `export` (a checked file) and `serve` (TF Serving's REST API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from transfer.cli.app import app, results, user_errors
from transfer.cli.parameters import ExportFormat, Quantization
from transfer.cli.printers import RichReporter


@app.command()
def export(
    run_dir: Annotated[str, typer.Argument(help="A run directory written by `transfer train`, or imagenet:resnet50|vgg16|inceptionv3.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the export to.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="savedmodel (TensorFlow, TF Serving; takes image bytes) | litert (.tflite) | onnx (.onnx); the last two take decoded pixels.")] = ExportFormat.savedmodel,
    quantize: Annotated[Quantization, typer.Option(help="LiteRT only: none | float16 | dynamic (int8 weights) | int8 (full integer, calibrated on the training split).")] = Quantization.none,
    min_agreement: Annotated[Optional[float], typer.Option(help="Refuse the export when its top-1 label matches the Keras model's on fewer of the validation images. Default: 0.98 for int8, 0.999 otherwise.", show_default=False)] = None,
    images: Annotated[Optional[Path], typer.Option(help="Images to check the export on (and calibrate int8 with) instead of the run's own split; required for imagenet:NAME, which has no split.", show_default=False)] = None,
    top_k: Annotated[Optional[int], typer.Option(help="SavedModel: labels per image in the signature. Default: min(3, classes).")] = None,
    min_confidence: Annotated[float, typer.Option(help="The answer is 'unknown' where the top probability is below this: kept in config.json for predict and serve, and in the SavedModel's `answer` output.")] = 0.0,
    threshold: Annotated[Optional[float], typer.Option(help="Multi-label runs: one threshold for every label, in place of each label's own (kept in config.json, and in the SavedModel's outputs).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier export written by transfer (nothing else).")] = False,
    weights: Annotated[Optional[str], typer.Option(help="With imagenet:NAME: PATH to its include_top weights file. Default: downloaded by Keras.", show_default=False)] = None,
) -> None:
    """Export a checked SavedModel, LiteRT or ONNX.

    Writes the model as a SavedModel, a LiteRT (.tflite) or an ONNX file, checked against the Keras model.

    Example: transfer export runs/photos --out exports/photos
    """
    with user_errors():
        from transfer.deploy.export import ExportOptions
        from transfer.deploy.export import export as run_export

        chosen = ExportOptions(format=format.value, quantize=quantize.value, top_k=top_k, min_agreement=min_agreement,
                               min_confidence=min_confidence, threshold=threshold, images=images)
        done = run_export(run_dir, out, chosen, weights=weights, force=force, reporter=RichReporter())
    results.print(
        f"{done.format}{f' ({done.quantize})' if done.quantize != 'none' else ''} export written to {done.path}: "
        f"{done.size_bytes / 1e6:.2f} MB, {done.agreement_of} agreement with the Keras model {done.agreement:.4f} on {done.images_checked} "
        f"images (max probability difference {done.max_difference:.2g})",
        highlight=False,
    )


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="A run directory, an export (SavedModel, .tflite or .onnx), or imagenet:resnet50|vgg16|inceptionv3.")],
    host: Annotated[str, typer.Option(help="Address to listen on. Another than 127.0.0.1 exposes the model beyond this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (TF Serving's REST port by default).")] = 8501,
    model_name: Annotated[Optional[str], typer.Option(help="NAME in /v1/models/NAME:predict. Default: the MODEL folder's name.", show_default=False)] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(help="File holding a key every request must send ('Authorization: Bearer KEY' or 'X-API-Key: KEY').", show_default=False)] = None,
    min_confidence: Annotated[Optional[float], typer.Option(help="The answer is 'unknown' where the top probability is below this. Default: the export's, else 0.", show_default=False)] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Multi-label models: give every label whose probability reaches this. Default: each label's threshold, chosen on the validation split.", show_default=False)] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Labels per image. Default: min(3, classes).", show_default=False)] = None,
    max_instances: Annotated[int, typer.Option(help="Images per request at most.")] = 64,
    max_body_mb: Annotated[float, typer.Option(help="Request body size limit in MB.")] = 16.0,
    weights: Annotated[Optional[str], typer.Option(help="With imagenet:NAME: PATH to its include_top weights file. Default: downloaded by Keras.", show_default=False)] = None,
) -> None:
    """Serve a model with TF Serving's REST API.

    Serves TF Serving's REST predict API, and a page to try the model on.

    Example: transfer serve exports/photos
    """
    with user_errors():
        from transfer.deploy.serving import ServerOptions, serve as run_server

        options = ServerOptions(
            host=host, port=port, model_name=model_name, api_key_file=api_key_file, min_confidence=min_confidence, threshold=threshold,
            top_k=top_k, max_instances=max_instances, max_body_mb=max_body_mb,
        )
        run_server(model, options, weights=weights, reporter=RichReporter())
