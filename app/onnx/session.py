"""onnxruntime sessions for converted models: thread settings and the graph contract, checked on load."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

# The contract between the converter and every consumer (service, edge export): one input [rows, features],
# float64 (float32 in graphs published before the converter kept scikit-learn's dtypes: each is fed its own
# type); a label output and a [rows, classes] probability output, no ZipMap.
ONNX_INPUT = "input"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"


class OnnxGraphError(ValueError):
    """The bytes are not a graph this platform can serve; the message says which part is wrong."""


def session_options(*, intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    """Options with explicit thread counts.

    onnxruntime's default is one intra-op thread per core in every process; with several gunicorn
    workers on one pod that oversubscribes the CPU limit (each worker spins a full pool), so the
    service passes its per-worker numbers here (PREDICT_ORT_INTRA_OP_THREADS / _INTER_OP_THREADS).
    """
    if intra_op_threads < 1 or inter_op_threads < 1:
        raise ValueError(
            f"onnxruntime thread counts must be >= 1, got intra_op={intra_op_threads} inter_op={inter_op_threads}"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    # Sequential: our graphs are chains of small ops; a parallel executor only adds scheduling cost.
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle intra-op threads spinning would burn the cores other workers need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    return opts


def make_session(onnx_bytes: bytes, *, intra_op_threads: int, inter_op_threads: int) -> Any:
    """A CPU InferenceSession for ``onnx_bytes``, refused with OnnxGraphError unless it keeps the contract."""
    if not onnx_bytes:
        raise OnnxGraphError("the ONNX graph is empty")
    try:
        session = ort.InferenceSession(
            onnx_bytes,
            sess_options=session_options(intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads),
            providers=["CPUExecutionProvider"],
        )
    except ValueError:
        raise
    except Exception as exc:  # onnxruntime's InvalidProtobuf/Fail/... share no useful base class
        raise OnnxGraphError(f"onnxruntime cannot load the graph (corrupt or unsupported): {exc}") from exc
    inputs = [i.name for i in session.get_inputs()]
    if inputs != [ONNX_INPUT]:
        raise OnnxGraphError(f"the graph's inputs are {inputs}, expected exactly [{ONNX_INPUT!r}]")
    outputs = {o.name for o in session.get_outputs()}
    if PROBABILITIES_OUTPUT not in outputs:
        raise OnnxGraphError(f"the graph's outputs {sorted(outputs)} lack {PROBABILITIES_OUTPUT!r}")
    return session


def graph_input_features(session: Any) -> int | None:
    """The declared feature count of the graph's input (None when the graph leaves it symbolic)."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 2:
        raise OnnxGraphError(f"the graph's input has shape {shape}, expected [rows, features]")
    width = shape[1]
    return width if isinstance(width, int) else None


def graph_input_type(session: Any) -> str:
    return str(session.get_inputs()[0].type)


INPUT_DTYPES: dict[str, type[np.floating[Any]]] = {"tensor(double)": np.float64, "tensor(float)": np.float32}


def input_dtype(session: Any) -> type[np.floating[Any]]:
    """The NumPy dtype the graph's input takes; OnnxGraphError for any other input type."""
    kind = graph_input_type(session)
    if kind not in INPUT_DTYPES:
        raise OnnxGraphError(f"the graph's input is {kind}, expected tensor(double) or tensor(float)")
    return INPUT_DTYPES[kind]


class OnnxPredictor:
    """``predict_proba`` through an onnxruntime session: a [rows, features] float64 batch in, one tensor per call."""

    def __init__(self, onnx_bytes: bytes, n_features: int, *, intra_op_threads: int, inter_op_threads: int) -> None:
        self.session = make_session(onnx_bytes, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads)
        self.input_dtype = input_dtype(self.session)
        width = graph_input_features(self.session)
        if width is not None and width != n_features:
            raise OnnxGraphError(f"the graph's input takes {width} features, the model has {n_features}")
        self.n_features = n_features
        self._outputs = [PROBABILITIES_OUTPUT]

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        # The whole micro-batch is one tensor: one run() whatever the number of rows.
        (proba,) = self.session.run(self._outputs, {ONNX_INPUT: x.astype(self.input_dtype, copy=False)})
        return np.asarray(proba, dtype=np.float64)
