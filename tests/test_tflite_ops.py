"""Custom ops in a user's .tflite: which the stock runtimes have, and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import ModelError
from toolkit.model.load import load_model_source
from toolkit.model.tflite_ops import STOCK_CUSTOM_OPS, custom_ops

from .models.custom_op_tflite import custom_op_tflite, write_custom_op_tflite


def test_the_custom_ops_are_read_from_the_files_operator_codes() -> None:
    assert custom_ops(custom_op_tflite("Landmarks2TransformMatrix")) == [
        "Landmarks2TransformMatrix"]


@pytest.mark.parametrize("op", sorted(STOCK_CUSTOM_OPS))
def test_a_custom_op_every_stock_runtime_registers_is_accepted(tmp_path: Path, op: str) -> None:
    model = write_custom_op_tflite(tmp_path / "detector.tflite", op)
    assert load_model_source(model).is_tflite


def test_a_select_tf_op_is_named_with_the_delegate_it_needs(tmp_path: Path) -> None:
    model = write_custom_op_tflite(tmp_path / "flex.tflite", "FlexErf")
    with pytest.raises(ModelError) as refused:
        load_model_source(model)
    assert str(refused.value) == (
        f"{model} uses TensorFlow ops kept by SELECT_TF_OPS ('FlexErf'): they need "
        "TensorFlow's Flex delegate, which tflite-runtime and ai-edge-litert do not have; "
        "convert the model with TFLite builtin ops only")


def test_a_hostile_op_name_is_shown_escaped(tmp_path: Path) -> None:
    model = write_custom_op_tflite(tmp_path / "evil.tflite", "\x1b]0;pwned\x07Op")
    with pytest.raises(ModelError) as refused:
        load_model_source(model)
    assert "\x1b" not in str(refused.value) and "'\\x1b]0;pwned\\x07Op'" in str(refused.value)
