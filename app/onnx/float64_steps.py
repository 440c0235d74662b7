"""Converters for steps whose skl2onnx graph onnxruntime cannot run in float64, so that the preprocessing in
front of a model stays float64 (app/onnx/sklearn_convert.py).

- ``SimpleImputer``: skl2onnx emits ai.onnx.ml ``Imputer``, which onnxruntime implements for float32 only.
  Replacing missing values is ``Where(IsNaN(x), statistics, x)``: exact in any dtype. Imputers that add an
  indicator, drop all-missing columns or look for a value other than NaN keep skl2onnx's converter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import TensorProto
from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
from sklearn.impute import SimpleImputer


def _imputer(scope: Any, operator: Any, container: Any) -> None:
    op = operator.raw_operator
    stats = np.asarray(op.statistics_, dtype=np.float64)
    simple = (
        op.add_indicator is False
        and isinstance(op.missing_values, float)
        and np.isnan(op.missing_values)
        and np.all(np.isfinite(stats))
    )
    if not simple:
        convert_sklearn_imputer(scope, operator, container)
        return
    x = operator.inputs[0].full_name
    proto = operator.inputs[0].type.to_onnx_type().tensor_type.elem_type
    dtype = np.float64 if proto == TensorProto.DOUBLE else np.float32
    stats_name = scope.get_unique_variable_name("imputer_statistics")
    container.add_initializer(stats_name, proto, [len(stats)], stats.astype(dtype).tolist())
    missing = scope.get_unique_variable_name("imputer_missing")
    container.add_node("IsNaN", [x], [missing], name=scope.get_unique_operator_name("IsNaN"))
    container.add_node(
        "Where", [missing, stats_name, x], [operator.outputs[0].full_name], name=scope.get_unique_operator_name("Where")
    )


CONVERTERS: dict[type, Callable[[Any, Any, Any], None]] = {SimpleImputer: _imputer}
