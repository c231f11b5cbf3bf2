"""A model file's ONNX Runtime variants: the torch module exported to ``.onnx``, then
rewritten by the ONNX Runtime recipes (:mod:`._ort_recipes`).

The export is ``torch.onnx.export(dynamo=True)``, the torch.export-based exporter (the
TorchScript one is deprecated since torch 2.9 and warns); it is made once per build
(:class:`OnnxExport`) and each chain starts from it: ``fp32-ort`` is the exported file
itself, ``int8-ort`` its static QDQ rewrite calibrated on the samples of
``calibration_data()`` the TFLite ``int8`` calibrates on.  Each file is then measured as a
``.tflite`` is (:func:`toolkit.compress._build.build_artifacts`): accuracy on the eval
split and fidelity to the torch model, through onnxruntime on the host.

Example::

    export = OnnxExport(source, Path("out"))
    variant = compress_onnx(source, dataclasses.replace(chain, runtime="onnxruntime"),
                            Path("out"), export, progress=print)
    export.discard()
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit._quiet import captured_native_output
from toolkit.artifacts.bundle import ARTIFACT_MODE
from toolkit.compress._convert import checked_calibration, compress_failure
from toolkit.compress._ort_recipes import Feed, refusal, rewrite
from toolkit.compress._recipes import Chain, Fp32Config, Int8StaticConfig
from toolkit.compress._usable import check_loads
from toolkit.compress._variant import CompressedVariant
from toolkit.compress.evaluate import _as_numpy
from toolkit.errors import CompressError
from toolkit.model.load import ModelSource
from toolkit.run.cancel import interrupts_deferred, raise_if_interrupted

if TYPE_CHECKING:
    from toolkit.compress._manifest import ConversionDetails

EXPORTER = "torch.onnx.export(dynamo=True)"


class OnnxExport:
    """The model's float ``.onnx``, exported on first use into ``folder`` (hidden) and
    shared by every ONNX Runtime chain of one build; :meth:`discard` removes it."""

    def __init__(self, source: ModelSource, folder: Path) -> None:
        self.source = source
        self.path = folder / f".{source.name}.export.onnx"
        self._made: ConversionDetails | CompressError | None = None

    def file(self, say: Callable[[], None]) -> tuple[Path, ConversionDetails]:
        """The exported file and how it was made (exported now, ``say`` called first, if it
        was not yet); an export that failed fails every chain with its reason, tried once."""
        if self._made is None:
            say()
            try:
                self._made = _export(self.source, self.path)
            except CompressError as exc:
                self._made = exc
        if isinstance(self._made, CompressError):
            raise self._made
        return self.path, self._made

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def compress_onnx(source: ModelSource, chain: Chain, folder: Path, export: OnnxExport, *,
                  progress: Callable[[str], None]) -> CompressedVariant:
    """``folder/VARIANT.onnx`` for ``chain`` (an ONNX Runtime one) from the shared export."""

    why = refusal(chain, calibrated=True)
    if why:
        raise CompressError(f"{chain.recipe}: {why}", recipe=chain.recipe)
    assert source.module is not None  # build_artifacts sends model files only
    target = folder / f"{chain.file_stem}{chain.suffix}"
    started = time.perf_counter()
    exported, details = export.file(
        lambda: progress(f"{chain.variant}: exporting to ONNX ({EXPORTER})"))
    raise_if_interrupted()
    if isinstance(chain.conversion, Fp32Config):
        shutil.copyfile(exported, target)
    else:
        progress(f"{chain.variant}: rewriting with onnxruntime ({chain.conversion.recipe})")
        feeds = (calibration_feeds(source, exported, chain.conversion)
                 if isinstance(chain.conversion, Int8StaticConfig) else [])
        details = {**details, **rewrite(chain, exported, target, feeds)}
    target.chmod(ARTIFACT_MODE)
    check_loads(target, chain.variant)
    return CompressedVariant(name=chain.variant, path=target, config=chain.to_dict(),
                             seconds=time.perf_counter() - started, details=details,
                             module=source.module)


def _export(source: ModelSource, target: Path) -> ConversionDetails:
    import onnx
    import torch

    assert source.module is not None
    try:
        # Ctrl-C waits for the exporter, as for every conversion; its progress lines
        # ("[torch.onnx] Run decompositions...") stay off the terminal.
        with interrupts_deferred(), captured_native_output(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(source.module.eval(), source.example_input, str(target),
                              dynamo=True, external_data=False, verbose=False)
    except Exception as exc:
        raise_if_interrupted()
        target.unlink(missing_ok=True)
        raise compress_failure("onnx export", exc, source.path) from exc
    opset = next((entry.version for entry in onnx.load_model(str(target)).opset_import
                  if entry.domain in ("", "ai.onnx")), None)
    return {"exporter": f"{EXPORTER}, opset {opset}"}


def calibration_feeds(source: ModelSource, exported: Path,
                      config: Int8StaticConfig) -> list[Feed]:
    """The first ``config.calibration_samples`` of ``calibration_data()`` (what the TFLite
    int8 calibrates on), keyed by the exported graph's input names."""
    import onnx

    calibration = checked_calibration(source.calibration_data, source.example_input,
                                     config.calibration_samples, config.recipe)
    graph = onnx.load_model(str(exported), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    names = [value.name for value in graph.input if value.name not in weights]
    feeds = []
    for inputs in calibration:
        if len(inputs) != len(names):
            raise CompressError(f"{config.recipe}: the exported graph takes {len(names)} "
                                f"inputs and calibration_data() gives {len(inputs)}",
                                recipe=config.recipe)
        feeds.append({name: _as_numpy(value) for name, value in zip(names, inputs,
                                                                     strict=True)})
    return feeds
