"""Runs an ONNX file in onnxruntime: onnx_run.py MODEL INPUT.f32 N,C,H,W OUTPUT.f32.

Checks the graph with onnx's checker when `onnx` is installed, then writes the logits as
little-endian f32. Used by tests/interop.rs to compare rslad's ONNX export with rslad itself.
"""
import sys

import numpy as np
import onnxruntime as ort

model, inp, shape, out = sys.argv[1:5]
try:
    import onnx

    onnx.checker.check_model(onnx.load(model))
except ImportError:
    pass
x = np.fromfile(inp, dtype="<f4").reshape([int(d) for d in shape.split(",")])
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
(logits,) = session.run(None, {session.get_inputs()[0].name: x})
np.asarray(logits, dtype="<f4").tofile(out)
