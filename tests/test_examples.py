"""The example model files load through the model protocol and convert as they claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.compress import Fp32Config, compress
from toolkit.model import load_model_source

from .conftest import REPO

MOBILENET96 = REPO / "examples" / "digits_mobilenet96.py"


def test_mobilenet96_takes_nhwc_and_its_data_matches() -> None:
    source = load_model_source(MOBILENET96)
    [example] = source.example_input
    assert tuple(example.shape) == (1, 96, 96, 1)  # NHWC: no TRANSPOSE in front of the stem
    assert source.calibration_data is not None and source.eval_data is not None
    assert source.train_data is not None
    for data in (source.calibration_data, source.eval_data, source.train_data):
        (inputs, label) = next(iter(data()))
        assert tuple(inputs[0].shape) == tuple(example.shape)
        assert 0 <= label <= 9
    assert sum(1 for _ in source.eval_data()) == 450
    # float16 on disk keeps the repository's copy small.
    assert MOBILENET96.with_suffix(".pt").stat().st_size < 2_000_000


@pytest.mark.slow
def test_mobilenet96_converts_without_transpose(tmp_path: Path) -> None:
    from toolkit.artifact import op_versions

    variant = compress(load_model_source(MOBILENET96), Fp32Config(), tmp_path)
    ops = {op["op"] for op in op_versions(variant.path)}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= ops
    assert "TRANSPOSE" not in ops
