"""Model files as real projects write them: outputs in a dict or nested tuples, helper
modules beside the model file, and the message for a folder given as the model."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.compress.evaluate import tflite_outputs
from toolkit.errors import ModelError
from toolkit.model.load import load_model_source

#: Beside the model file: its layers, imported as ``python model.py`` would.
LAYERS = """
import torch
from torch import nn


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(8, 16)
        self.cls = nn.Linear(16, 4)
        self.box = nn.Linear(16, 2)

    def forward(self, x):
        hidden = torch.relu(self.body(x))
        # Not in alphabetical order: the order kept is the model's.
        return {"logits": self.cls(hidden), "boxes": self.box(hidden)}
"""

DICT_MODEL = """
import torch
from layers import Heads


def build_model():
    return Heads().eval()


def example_input():
    return (torch.randn(1, 8),)


def eval_data():
    generator = torch.Generator().manual_seed(1)
    for index in range(8):
        yield (torch.randn(1, 8, generator=generator),), index % 4
"""


def write_model(folder: Path, text: str, **helpers: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in helpers.items():
        (folder / f"{name}.py").write_text(source)
    model = folder / "model.py"
    model.write_text(text)
    return model


def nested_model(returns: str) -> str:
    return f"""
import torch


class Nested(torch.nn.Module):
    def forward(self, x):
        a, b, c = x * 1, x * 2, x * 3
        return {returns}


def build_model():
    return Nested()


def example_input():
    return (torch.ones(1, 3),)
"""


def test_a_dict_of_outputs_is_flattened_in_the_models_order_with_its_names(
        tmp_path: Path) -> None:
    source = load_model_source(write_model(tmp_path, DICT_MODEL, layers=LAYERS))
    assert source.output_names == ("logits", "boxes")
    assert source.module is not None
    (sample,) = source.example_input
    with torch.no_grad():
        logits, boxes = source.module(sample)
        wanted = source.module.model(sample)
    assert torch.equal(logits, wanted["logits"]) and torch.equal(boxes, wanted["boxes"])


@pytest.mark.parametrize(("returns", "names", "scales"), [
    ("((a, b), c)", ("output_0.0", "output_0.1", "output_1"), (1, 2, 3)),
    ("[c, {'z': a, 'y': (b,)}]", ("output_0", "output_1.z", "output_1.y.0"), (3, 1, 2)),
    ("{'all': [a, b], 'last': c}", ("all.0", "all.1", "last"), (1, 2, 3)),
])
def test_nested_outputs_are_flattened_depth_first(tmp_path: Path, returns: str,
                                                  names: tuple[str, ...],
                                                  scales: tuple[int, ...]) -> None:
    source = load_model_source(write_model(tmp_path, nested_model(returns)))
    assert source.output_names == names
    assert source.module is not None
    outputs = source.module(*source.example_input)
    assert isinstance(outputs, tuple)
    assert [float(o[0, 0]) for o in outputs] == [float(s) for s in scales]


@pytest.mark.parametrize(("returns", "names"), [
    ("a", ("output",)), ("(a, b)", ("output_0", "output_1"))])
def test_a_tensor_or_a_flat_tuple_is_kept_as_the_model_returns_it(
        tmp_path: Path, returns: str, names: tuple[str, ...]) -> None:
    source = load_model_source(write_model(tmp_path, nested_model(returns)))
    assert source.output_names == names
    assert type(source.module).__name__ == "Nested"  # no wrapper: its file stays as it was


def test_an_output_that_is_not_a_tensor_is_refused_in_one_line(tmp_path: Path) -> None:
    model = write_model(tmp_path, nested_model("{'logits': a, 'loss': None}"))
    with pytest.raises(ModelError) as caught:
        load_model_source(model)
    assert str(caught.value) == (f"{model}: forward returns None as loss; only a tensor, or "
                                 "tensors in tuples, lists and dicts can be converted")


def test_a_module_beside_the_model_file_is_importable_while_it_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As for a user (PYTHONDONTWRITEBYTECODE may be set here): the first import writes
    # layers' bytecode, the second reads only that, never the source.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    path_before = list(sys.path)
    model = write_model(tmp_path / "project", DICT_MODEL, layers=LAYERS)
    first = load_model_source(model)
    second = load_model_source(model)
    assert list((model.parent / "__pycache__").glob("layers.*.pyc"))
    assert sys.path == path_before
    assert "layers" not in sys.modules
    helper = (model.parent / "layers.py").resolve()
    for source in (first, second):
        assert helper in dict(source.loaded_files)


def test_each_model_gets_its_own_helper_module_of_the_same_name(tmp_path: Path) -> None:
    widths = {}
    for width in (3, 5):
        model = write_model(tmp_path / f"model{width}", """
import torch
from layers import WIDTH


def build_model():
    return torch.nn.Linear(WIDTH, 2)


def example_input():
    return (torch.zeros(1, WIDTH),)
""", layers=f"WIDTH = {width}\n")
        source = load_model_source(model)
        widths[width] = source.example_input[0].shape[1]
    assert widths == {3: 3, 5: 5}


def test_a_data_function_may_import_beside_the_model_when_it_runs(tmp_path: Path) -> None:
    model = write_model(tmp_path, """
import torch


def build_model():
    return torch.nn.Linear(4, 2)


def example_input():
    return (torch.zeros(1, 4),)


def eval_data():
    from samples import COUNT
    for index in range(COUNT):
        yield (torch.full((1, 4), float(index)),), index % 2
""", samples="COUNT = 3\n")
    source = load_model_source(model)
    assert source.eval_data is not None
    assert [label for _inputs, label in source.eval_data()] == [0, 1, 0]
    assert "samples" not in sys.modules


def test_a_folder_given_as_the_model_names_the_model_files_in_it(tmp_path: Path) -> None:
    write_model(tmp_path, DICT_MODEL, layers=LAYERS)
    (tmp_path / "face.tflite").write_bytes(b"")
    result = CliRunner().invoke(main, ["compress", str(tmp_path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"edge: error: {tmp_path} is a folder, not a model file; the model files in it: "
        f"{tmp_path / 'face.tflite'}, {tmp_path / 'model.py'}")


def test_a_folder_without_a_model_file_says_what_one_is(tmp_path: Path) -> None:
    (tmp_path / "layers.py").write_text(LAYERS)
    with pytest.raises(ModelError) as caught:
        load_model_source(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path} is a folder, not a model file, and has no model file in it (a .py "
        "model file with build_model(), a .tflite file or an .onnx file)")


@pytest.mark.integration  # converts the model
def test_a_model_returning_a_dict_compresses_and_evaluates(tmp_path: Path) -> None:
    model = write_model(tmp_path / "project", DICT_MODEL, layers=LAYERS)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compress", str(model), "--recipe", "fp32", "-o",
                                       str(out), "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["outputs"] == ["logits", "boxes"]
    [fp32] = manifest["variants"]
    assert fp32["eval_samples"] == 8 and fp32["fidelity"]["top1_agreement"] == 1.0
    [outputs] = tflite_outputs(out / "fp32.tflite", [(np.zeros((1, 8), np.float32),)])
    assert [o.shape for o in outputs] == [(1, 4), (1, 2)]


def test_distillation_trains_the_first_of_a_dicts_outputs(tmp_path: Path) -> None:
    from toolkit.compress import DistillConfig
    from toolkit.compress._transform import TransformContext, apply_transform

    source = load_model_source(write_model(tmp_path, DICT_MODEL + """

def train_data():
    yield from eval_data()
""", layers=LAYERS))
    assert source.module is not None
    context = TransformContext(teacher=source.module, example=source.example_input,
                               train_data=source.train_data, progress=lambda _line: None)
    student = apply_transform(copy.deepcopy(source.module), DistillConfig(epochs=1), context)
    before, after = (dict(m.named_parameters()) for m in (source.module, student))
    assert not torch.equal(before["model.cls.weight"], after["model.cls.weight"])
    assert torch.equal(before["model.box.weight"], after["model.box.weight"])  # no loss on it
