"""TensorFlow's own converters, run for `transfer export`: the LiteRT converter (float, float16,
dynamic range and full-integer int8 with the head left float) and Keras' ONNX exporter (tf2onnx),
with their console noise silenced and their failures turned into one line (`ExportFailedError`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from transfer.core.errors import ExportFailedError


def write_litert(model, file: Path, quantize: str, calibration_paths: Sequence[str]) -> None:
    """A `.tflite` file by TensorFlow's converter; pixels in, the softmax out as `scores` (`[N, classes]`)
    and, for a model with an open-set detector (`transfer.models.detector`), `novelty` (`[N]`)."""
    import keras
    import tensorflow as tf

    size = int(model.input_shape[1])
    outputs = model.output if isinstance(model.output, dict) else {"scores": model.outputs[0]}
    # From the Keras model, which freezes its variables into the file; the dict names the outputs.
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(model.inputs, outputs))
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        with quiet():
            file.write_bytes(_int8(converter, calibration_paths, size) if quantize == "int8" else converter.convert())
    except Exception as error:  # the converter's ConverterError, or whatever its MLIR passes raise
        raise ExportFailedError(f"TensorFlow's LiteRT converter could not convert this model: {first_line(error)}") from None


#: The TFLite tensors that stay float32 in an int8 export: the head (its dense layers and softmax), the
#: temperature after it and the novelty score beside it, by their layer names in the traced graph
#: (`transfer.models.heads`, `transfer.models.detector`).
FLOAT_TENSORS = re.compile(r"/(head|temperature|novelty)(_\d+)?/")


def _int8(converter, calibration_paths: Sequence[str], size: int) -> bytes:
    """Full-integer conversion of the backbone with the head, softmax and temperature left float32.

    Quantizing the head cost agreement on the low-margin images a weak run has many of: its logits
    and its softmax were int8 (the softmax output in steps of 1/256, which tied or flipped close
    decisions). Here they compute in float32 on the dequantized pooled features (a few thousand
    multiply-adds: no measurable time), through TensorFlow's selective quantization
    (`QuantizationDebugger` with `denylisted_nodes`). The file takes float32 pixels 0-255 (quantized
    by its first op) and returns float32 probabilities. Calibration: each training image and its
    horizontal mirror (the run trains with flips), so that a small split still spans the ranges.
    """
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from transfer.data.folders import iter_decoded_batches

    def calibration():
        for batch in iter_decoded_batches(calibration_paths, size, batch_size=16):
            for pixels in batch.pixels:
                yield [pixels[None]]
                yield [pixels[None, :, ::-1]]

    converter.representative_dataset = calibration
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=lambda: iter(()))
    names = [tensor["name"] for tensor in Interpreter(model_content=debugger.calibrated_model).get_tensor_details()]
    ops = Interpreter(model_content=debugger.calibrated_model)._get_ops_details()
    softmax = [names[op["outputs"][0]] for op in ops if op["op_name"] == "SOFTMAX"]
    # the op that ends a float block without its name (the novelty's last select, named as the model's output)
    ends = [names[op["outputs"][0]] for op in ops if any(FLOAT_TENSORS.search(names[i]) for i in op["inputs"] if i >= 0)
            and not FLOAT_TENSORS.search(names[op["outputs"][0]]) and op["op_name"] == "SELECT_V2"]
    float_nodes = sorted({name for name in names if FLOAT_TENSORS.search(name)} | set(softmax) | set(ends))
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes)
    return debugger.get_nondebug_quantized_model()


def write_onnx(model, file: Path, class_names: list[str], thresholds: dict | None = None) -> None:
    """A `.onnx` file by Keras' exporter (tf2onnx), with the labels (and a multi-label model's
    thresholds) in its metadata and the outputs named `scores` (and `novelty`, as `write_litert`)."""
    import onnx

    size = int(model.input_shape[1])
    model(np.zeros((1, size, size, 3), np.float32))  # a loaded model is built before Keras can trace it
    try:
        with quiet(), _lean_tf2onnx():
            model.export(str(file), format="onnx", verbose=False)
    except Exception as error:  # tf2onnx raises whatever its passes meet
        raise ExportFailedError(f"Keras' ONNX exporter (tf2onnx) could not convert this model: {first_line(error)}") from None
    proto = onnx.load(str(file))
    if len(proto.graph.output) == 1:  # a dict's outputs (`scores`, `novelty`) keep their keys
        output = proto.graph.output[0].name
        for node in proto.graph.node:
            node.output[:] = ["scores" if name == output else name for name in node.output]
        proto.graph.output[0].name = "scores"
    metadata = {"labels": json.dumps(class_names), "producer": "transfer export",
                **({"thresholds": json.dumps(thresholds)} if thresholds else {})}
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(file))


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keeps the converters' chatter off stdout, which carries `transfer`'s results: the TFLite
    converter saves a temporary SavedModel through Keras, which prints its endpoints, and warns that
    it has no statistics for the uint8 input it was told to use (on purpose: pixels are 0-255)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        warnings.filterwarnings("ignore", category=FutureWarning)  # tf2onnx on NumPy 2
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")  # int8's QuantizationDebugger
        yield


@contextlib.contextmanager
def _lean_tf2onnx() -> Iterator[None]:
    """tf2onnx with its memory kept near the model's size, same output (ResNet50: peak 7.2 -> 2.8 GiB).

    Two habits of tf2onnx's, undone for the conversion only:
    - It deep-copies the whole graph, weights included, before each optimizer pass, so that it can
      skip a pass that fails (`TF2ONNX_CATCH_ERRORS=FALSE` turns that off: a failing pass fails the
      export, which says so).
    - After each pass it rewrites every node's `NodeProto` in place. Under protobuf's upb runtime a
      cleared field's old value stays in the message's arena until the message is freed, so every
      pass left one more copy of every weight behind. Here each update builds a fresh `NodeProto`
      instead, with the same fields, and the old one is freed.
    """
    import onnx
    from tf2onnx.graph import Node

    def update_proto(node, external_tensor_storage=None):
        old = node._op
        fresh = onnx.NodeProto(name=old.name, op_type=old.op_type, domain=old.domain, doc_string=old.doc_string)
        fresh.input.extend(node.input)
        fresh.output.extend(node.output)
        node._op = fresh
        for name, graph in (node.get_body_graphs() or {}).items():
            node.set_attr(name, graph.make_graph(f"graph for {node.name} {name}", external_tensor_storage=external_tensor_storage))
        fresh.attribute.extend(node.get_onnx_attrs(external_tensor_storage).values())

    previous = os.environ.get("TF2ONNX_CATCH_ERRORS"), Node.update_proto
    os.environ["TF2ONNX_CATCH_ERRORS"] = "FALSE"
    Node.update_proto = update_proto
    try:
        yield
    finally:
        Node.update_proto = previous[1]
        if previous[0] is None:
            os.environ.pop("TF2ONNX_CATCH_ERRORS", None)
        else:
            os.environ["TF2ONNX_CATCH_ERRORS"] = previous[0]


def first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]
