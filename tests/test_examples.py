"""The example model files load through the model protocol and convert as they claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.compress import Fp32Config, compress
from toolkit.model.load import load_model_source

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
    from toolkit.artifacts.bundle import op_versions

    variant = compress(load_model_source(MOBILENET96), Fp32Config(), tmp_path)
    ops = {op["op"] for op in op_versions(variant.path)}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= ops
    assert "TRANSPOSE" not in ops


def test_what_a_model_files_imports_print_stays_off_the_terminal(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    # transformers imports torchao, which reports on descriptor 2 the CUDA kernels it cannot
    # load, on every run; a model file's imports are the converters' business.
    model = tmp_path / "chatty.py"
    model.write_text("import os, sys\n"
                     "os.write(2, b'Failed to load _C_mxfp8.so\\n')\n"
                     "print('W1201 _pytree.py:630] register_constant', file=sys.stderr)\n"
                     "import torch\n"
                     "def build_model():\n    return torch.nn.Linear(2, 2).eval()\n"
                     "def example_input():\n    return (torch.zeros(1, 2),)\n")
    load_model_source(model)
    shown = capfd.readouterr()
    assert "_C_mxfp8" not in shown.err + shown.out and "_pytree" not in shown.err + shown.out
