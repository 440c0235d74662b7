"""scikit-learn models as ONNX graphs: conversion at publish time, parity checks, onnxruntime sessions.

Importable without the prediction service (no web framework here): the train job, the edge export and
the service all use it. ``sklearn_convert`` imports skl2onnx, which only publishers need; ``session``
and ``parity`` need onnxruntime alone.
"""
