"""The class names the preprocessing service answers with and the words it tokenizes: the model's, from its
config on Triton."""

from __future__ import annotations

import pytest

from app.multimodal.triton_repo import OUTPUT
from app.preprocess.triton import TritonUnavailableError, classes_from_config, tokenizer_from_config


def config(classes: str | None, dims: list[int], vocabulary: str | None = "red,blue") -> dict[str, object]:
    """Triton's JSON form of a config.pbtxt, as GET /v2/models/<name>/config returns it."""
    params = {} if classes is None else {"classes": {"string_value": classes}}
    if vocabulary is not None:
        params["vocabulary"] = {"string_value": vocabulary}
    return {"name": "m", "output": [{"name": OUTPUT, "data_type": "TYPE_FP32", "dims": dims}], "parameters": params}


def test_classes_come_from_the_parameter_in_output_order() -> None:
    assert classes_from_config("m", config("b,a,c", [3])) == ("b", "a", "c")


def test_a_model_without_class_names_or_with_the_wrong_count_is_not_served() -> None:
    with pytest.raises(TritonUnavailableError, match=r"no 'classes' parameter.*export-triton"):
        classes_from_config("m", config(None, [3]))
    with pytest.raises(TritonUnavailableError, match="outputs 4 probabilities but names 3 classes"):
        classes_from_config("m", config("a,b,c", [4]))


def test_the_tokenizer_is_built_from_the_vocabulary_parameter_in_id_order() -> None:
    tokenizer = tokenizer_from_config("m", config("a,b", [2], vocabulary="green,red"))
    assert tokenizer.vocabulary == ("green", "red")
    assert tokenizer.tokenize("red green blue")[:4].tolist() == [3, 2, 1, 0]


def test_a_model_without_a_usable_vocabulary_is_not_served() -> None:
    with pytest.raises(TritonUnavailableError, match=r"no 'vocabulary' parameter.*export-triton"):
        tokenizer_from_config("m", config("a,b", [2], vocabulary=None))
    with pytest.raises(TritonUnavailableError, match=r"'vocabulary' parameter: .*repeated: \['red'\]"):
        tokenizer_from_config("m", config("a,b", [2], vocabulary="red,Blue,red"))
