"""``int8-mixed`` and the per-layer sensitivity analysis behind it (``edge compress --analyze``).

Sensitivity: each quantizable layer (Conv1d, Conv2d, Linear) is quantized alone, everything
else float, and the file is measured through the TFLite interpreter: the eval metric (accuracy
with labels, else top-1 agreement with the float model) and the output SQNR against the float
torch model.  ``int8-mixed`` then makes layers float, most sensitive first, until the budget
holds, and checks in the written file that exactly those layers have float weights.

Layers are chosen by a node filter of our own: ``PT2EQuantizer.set_module_name`` quantizes
nothing under torch 2.13, because export now keys ``nn_module_stack`` as
``L__self__features.0`` while its filter strips ``L__self___`` and maps ``_`` to ``.``, and
because a convolution's partition holds its weight, a ``get_attr`` node without any module
stack, which no name filter accepts.

Example::

    report = analyze_sensitivity(module, source)
    details = int8_mixed(module, source, Int8MixedConfig(max_drop=0.5), Path("mixed.tflite"))
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from device_agent.runtime import find_runtime
from toolkit._quiet import captured_native_output, silence_library_logging
from toolkit.artifacts.bundle import operator_name
from toolkit.compress._convert import calibrated_int8, check_sample, compress_failure, convert
from toolkit.compress._recipes import Fp32Config, Int8MixedConfig
from toolkit.compress.evaluate import tflite_accuracy, tflite_fidelity
from toolkit.errors import CompressError, ModelError, OutputError, UsageError
from toolkit.model.load import ModelSource, load_model_source

if TYPE_CHECKING:
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    from toolkit.compress._manifest import (
        Calibration,
        ConversionDetails,
        IoTypes,
        LayerPrecision,
        SensitivityTable,
    )
    from toolkit.model.load import DataFunction, Inputs, LabelledSample

Progress = Callable[[str], None]
#: Module classes whose weights int8 quantizes, as torch.export names them.
LAYER_TYPES = ("torch.nn.modules.conv.Conv1d", "torch.nn.modules.conv.Conv2d",
               "torch.nn.modules.linear.Linear")
#: TFLite operators that carry a layer's weights (input 1), in execution order.
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "TRANSPOSE_CONV")
_CALIBRATION_SAMPLES = Int8MixedConfig().calibration_samples


def _quiet(_: str) -> None:
    """The default progress sink: library callers get no output."""


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer quantized alone: the metric's drop from fp32 (points) and the output SQNR."""

    layer: str
    type: str
    metric: float
    drop_points: float
    sqnr_db: float | None


@dataclass(frozen=True)
class Sensitivity:
    """The per-layer table, with fp32 and all-int8 for reference; metrics in points (0-100)."""

    metric: str
    fp32: float
    int8: float
    int8_sqnr_db: float | None
    layers: tuple[LayerSensitivity, ...]

    def most_sensitive_first(self) -> list[str]:
        # Ties in the metric (common on small eval sets) are broken by the noisier output.
        return [row.layer for row in sorted(self.layers, key=lambda row: (
            -row.drop_points, float("inf") if row.sqnr_db is None else row.sqnr_db))]

    def to_dict(self) -> SensitivityTable:
        return {"metric": self.metric, "units": "points (percent)", "fp32": self.fp32,
                "int8": self.int8, "int8_sqnr_db": self.int8_sqnr_db,
                "layers": [asdict(row) for row in self.layers]}


def _type_path(kind: str | type) -> str:
    # torch 2.13 records the class as its dotted path; older versions the class itself.
    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"


def _layer_of(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    for path, kind in reversed(list(stack.values())):
        if _type_path(kind) in LAYER_TYPES:
            return str(path)
    return None


def _owner(node: torch.fx.Node, owners: dict[torch.fx.Node, str | None]) -> str | None:
    """The layer a node computes for: its own, else the one feeding it (its ReLU, its pool)."""
    if node not in owners:
        owner = _layer_of(node)
        if owner is None:
            producers = [n for n in node.all_input_nodes if n.op == "call_function"]
            owner = _owner(producers[0], owners) if producers else None
        owners[node] = owner
    return owners[node]


def quantizable_layers(module: torch.nn.Module, example: Inputs) -> list[tuple[str, str]]:
    """``[("features.0", "Conv2d"), ...]`` in the order the exported graph computes them."""
    import torch

    graph = torch.export.export(module.eval(), example).module().graph
    found: dict[str, str] = {}
    for node in graph.nodes:
        layer = _layer_of(node) if node.op == "call_function" else None
        if layer is not None and layer not in found:
            kind = next(k for p, k in node.meta["nn_module_stack"].values() if p == layer)
            found[layer] = _type_path(kind).rsplit(".", 1)[-1]
    return list(found.items())


def _layer_quantizer(int8_layers: frozenset[str | None], per_channel: bool) -> PT2EQuantizer:
    """Static int8 for the ops of ``int8_layers`` (``None``: ops of no layer), float elsewhere."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    class LayerQuantizer(PT2EQuantizer):  # type: ignore[misc]
        def _annotate_for_static_quantization_config(
                self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            owners: dict[torch.fx.Node, str | None] = {}

            def chosen(node: torch.fx.Node) -> bool:
                # Weights and inputs carry no module stack: the op that uses them decides.
                return node.op != "call_function" or _owner(node, owners) in int8_layers

            self._annotate_all_static_patterns(model, self.global_config, chosen)
            return model

    return LayerQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=per_channel, is_dynamic=False))


def require_measuring_data(source: ModelSource, recipe: str) -> DataFunction:
    """int8-mixed and --analyze measure every layer: eval and calibration data, or one line.

    Returns ``eval_data``, known to be there.
    """
    if source.eval_data is None or source.calibration_data is None:
        missing = "eval_data()" if source.eval_data is None else "calibration_data()"
        raise ModelError(f"{recipe} measures every layer: the model file must define "
                         f"{missing} yielding (inputs, label); a label may be None, then "
                         "top-1 agreement with the float model is the metric",
                         path=source.path)
    return source.eval_data


class _Bench:
    """Builds files from one module and measures them against it on the model's eval data."""

    def __init__(self, module: torch.nn.Module, source: ModelSource, *, per_channel: bool,
                 calibration_samples: int, recipe: str) -> None:
        eval_data = require_measuring_data(source, recipe)
        self.module, self.example = module.eval(), source.example_input
        self.calibration_data, self.recipe = source.calibration_data, recipe
        self.per_channel, self.calibration_samples = per_channel, calibration_samples
        self.samples: list[LabelledSample] = list(eval_data())
        if not self.samples:
            raise ModelError("eval_data() yielded no samples", path=source.path)
        check_sample(tuple(self.samples[0][0]), self.example, "eval_data()")
        self.labelled = self.samples[0][1] is not None
        self.metric = "accuracy" if self.labelled else "top1_agreement"
        self.inputs = [tuple(inputs) for inputs, _ in self.samples]

    def int8(self, int8_layers: frozenset[str | None], target: Path) -> Calibration:
        with captured_native_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # converter chatter is not the user's
            return calibrated_int8(self.module, self.example,
                                   _layer_quantizer(int8_layers, self.per_channel),
                                   self.calibration_data, self.calibration_samples, target,
                                   recipe=self.recipe, per_channel=self.per_channel)

    def fp32(self, target: Path) -> None:
        with captured_native_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert(self.module, self.example, Fp32Config(), None, target)

    def measure(self, path: Path) -> tuple[float, float | None]:
        """The metric in points and the output SQNR in dB, both through the interpreter."""
        fidelity = tflite_fidelity(path, self.module, self.inputs)
        value = (tflite_accuracy(path, self.samples)["accuracy"] if self.labelled
                 else fidelity["top1_agreement"])
        assert value is not None  # None only without inputs; __init__ refused no samples
        return round(100 * value, 4), fidelity["sqnr_db"]


def _analyze(bench: _Bench, folder: Path, progress: Progress) -> Sensitivity:
    layers = quantizable_layers(bench.module, bench.example)
    if not layers:
        raise CompressError(f"{bench.recipe}: the model has no Conv1d, Conv2d or Linear layer "
                            "to quantize", recipe=bench.recipe)
    bench.fp32(folder / "fp32.tflite")
    fp32, _ = bench.measure(folder / "fp32.tflite")
    every = frozenset([None, *(name for name, _ in layers)])
    bench.int8(every, folder / "int8.tflite")
    int8, int8_sqnr = bench.measure(folder / "int8.tflite")
    progress(f"sensitivity: fp32 {bench.metric} {fp32:.2f}, all int8 {int8:.2f}")
    rows = []
    for index, (name, kind) in enumerate(layers):
        path = folder / f"layer{index}.tflite"
        bench.int8(frozenset([name]), path)
        value, sqnr = bench.measure(path)
        rows.append(LayerSensitivity(layer=name, type=kind, metric=value,
                                     drop_points=round(fp32 - value, 4), sqnr_db=sqnr))
        progress(f"sensitivity: {name} ({kind}) alone int8: {bench.metric} {value:.2f}, "
                 f"SQNR {sqnr} dB")
    return Sensitivity(metric=bench.metric, fp32=fp32, int8=int8, int8_sqnr_db=int8_sqnr,
                       layers=tuple(rows))


def analyze_sensitivity(module: torch.nn.Module, source: ModelSource, *,
                        per_channel: bool = True,
                        calibration_samples: int = _CALIBRATION_SAMPLES,
                        progress: Progress = _quiet) -> Sensitivity:
    """Quantize each layer of ``module`` alone and measure it on ``source``'s eval data."""
    silence_library_logging()
    bench = _Bench(module, source, per_channel=per_channel,
                   calibration_samples=calibration_samples, recipe="--analyze")
    with tempfile.TemporaryDirectory(prefix="edge-sensitivity-") as folder:
        return _analyze(bench, Path(folder), progress)


def analyze_to_folder(model_path: str | Path, out_dir: str | Path, *,
                      progress: Progress = _quiet) -> Path:
    """Write ``out_dir/sensitivity.json``, the per-layer table of the model file; its path."""
    source = load_model_source(model_path)
    if source.module is None:  # a .tflite or .onnx, deployed as given
        raise UsageError(f"{source.path} is already a {source.path.suffix} file; --analyze "
                         "takes a .py model")
    try:
        report = analyze_sensitivity(source.module, source, progress=progress)
    except (UsageError, CompressError):
        raise
    except Exception as exc:
        raise compress_failure("--analyze", exc, source.path) from exc
    out_dir = Path(out_dir)
    path = out_dir / "sensitivity.json"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": {"name": source.name, "path": str(source.path),
                                              "sha256": source.sha256},
                                    **report.to_dict()}, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"output folder {out_dir} is not writable: {exc.strerror}",
                          path=out_dir) from None
    return path


def int8_mixed(module: torch.nn.Module, source: ModelSource, config: Int8MixedConfig,
               target: Path, *, progress: Progress = _quiet) -> ConversionDetails:
    """Write ``target``: int8 with the fewest, most sensitive layers float within the budget."""
    bench = _Bench(module, source, per_channel=config.per_channel,
                   calibration_samples=config.calibration_samples, recipe=config.recipe)
    names = [name for name, _ in quantizable_layers(bench.module, bench.example)]
    unknown = sorted(set(config.keep_float) - set(names))
    if unknown:
        raise UsageError(f"int8-mixed: keep_float names {', '.join(unknown)}, not a quantizable "
                         f"layer of the model; its layers: {', '.join(names)}")
    with tempfile.TemporaryDirectory(prefix="edge-int8-mixed-") as folder:
        report = _analyze(bench, Path(folder), progress)
    # Never worse than plain int8: a budget looser than int8's own drop is not spent.
    floor = max(report.fp32 - config.max_drop, report.int8)
    float_layers = list(config.keep_float)
    candidates = [name for name in report.most_sensitive_first() if name not in float_layers]
    tried: list[dict[str, object]] = []
    while True:
        calibration = bench.int8(frozenset([None, *names]) - frozenset(float_layers), target)
        value, sqnr = bench.measure(target)
        within = value >= floor - 1e-9
        tried.append({"float_layers": list(float_layers), bench.metric: value, "sqnr_db": sqnr,
                      "within_budget": within})
        progress(f"{config.recipe}: float {', '.join(float_layers) or 'none'}: "
                 f"{bench.metric} {value:.2f} (floor {floor:.2f})")
        if within or not candidates:
            break
        float_layers.append(candidates.pop(0))
    kinds = {row.layer: row.type for row in report.layers}
    return {"calibration": calibration, "metric": bench.metric,
            "budget": {"max_drop_points": config.max_drop, "fp32": report.fp32,
                       "int8": report.int8, "floor": round(floor, 4), "within": within},
            "float_layers": float_layers, "tried": tried,
            "layers": _check_layers(target, [(n, kinds[n], n not in float_layers)
                                             for n in names], config.recipe),
            "io": _io_types(target), "sensitivity": report.to_dict()}


def weighted_ops(path: Path) -> list[dict[str, str]]:
    """``[{"op": "CONV_2D", "weights": "INT8"}, ...]``: the file's weight-carrying operators."""
    from ai_edge_litert import schema_py_generated as schema

    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    found = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for i in range(graph.OperatorsLength()):
            operator = graph.Operators(i)
            name = operator_name(model.OperatorCodes(operator.OpcodeIndex()))
            if name in _WEIGHTED_OPS and operator.InputsLength() > 1:
                weights = graph.Tensors(operator.Inputs(1))
                found.append({"op": name, "weights": type_names.get(weights.Type(), "?")})
    return found


def _check_layers(path: Path, layers: list[tuple[str, str, bool]],
                  recipe: str) -> list[LayerPrecision]:
    """Each layer's intended precision, confirmed by its operator's weights in the file."""
    ops = weighted_ops(path)
    if len(ops) != len(layers):
        # Some layer lowered to other operators: the plan is recorded, unconfirmed.
        return [{"layer": name, "type": kind, "precision": "int8" if int8 else "float",
                 "confirmed": False} for name, kind, int8 in layers]
    checked: list[LayerPrecision] = []
    for (name, kind, int8), op in zip(layers, ops, strict=True):
        if (op["weights"] == "INT8") != int8:
            raise CompressError(f"{recipe}: {name} was to be {'int8' if int8 else 'float'} "
                                f"but its {op['op']} has {op['weights']} weights in the file",
                                recipe=recipe)
        checked.append({"layer": name, "type": kind, "precision": "int8" if int8 else "float",
                        "tflite_op": op["op"], "tflite_weights": op["weights"],
                        "confirmed": True})
    return checked


def _io_types(path: Path) -> IoTypes:
    with captured_native_output():
        interpreter = find_runtime().interpreter_class(model_path=str(path))
    inputs = [str(d["dtype"].__name__) for d in interpreter.get_input_details()]
    outputs = [str(d["dtype"].__name__) for d in interpreter.get_output_details()]
    io: IoTypes = {"inputs": inputs, "outputs": outputs}
    if any(kind != "int8" for kind in inputs + outputs):
        io["note"] = ("not full-integer I/O: a float first or last layer takes or gives float "
                      "tensors, so the board passes float32 there")
    return io
