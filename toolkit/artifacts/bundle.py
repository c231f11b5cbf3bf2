"""Stage 3: the artifact bundle, the deployable files with their manifest.

Each artifact is named by what it is (``fp32.tflite``) in the bundle and by its
sha256 on the board, so a board never confuses two builds of one variant.

``manifest.json`` carries ``manifest_version`` (:data:`MANIFEST_VERSION`); a manifest
written before it had none and reads as version 1.  :func:`read_manifest` refuses a newer
one in one line, naming the file and the version this edge reads.

Example::

    artifact = describe_artifact("int8", path, config={...}, accuracy=0.98)
    write_manifest(bundle_dir, source, [artifact])
    read_manifest(bundle_dir / "manifest.json")["variants"][0]["sha256"]
"""

from __future__ import annotations

import copy
import functools
import json
import mmap
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, Protocol, Required, TypedDict, cast

from device_agent.protocol import sha256_file
from toolkit.errors import UsageError
from toolkit.model.load import ModelSource
from toolkit.results.facts import (
    ArtifactEntry,
    Fidelity,
    OpVersion,
    RuntimeCheck,
    fidelity_of,
    runtime_check_of,
)
from toolkit.results.record import ResultRecord, Stage, Status

#: The shape of ``manifest.json`` this edge writes and reads (see :class:`Manifest`); one
#: without ``manifest_version`` was written before the field and is version 1.
MANIFEST_VERSION = 1
#: Every artifact's permissions: readable by all, executable by none (ai-edge-quantizer
#: writes its files 0755).
ARTIFACT_MODE = 0o644


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """One deployable ``.tflite`` (or ``.onnx``) file and what is known about it before it
    runs."""

    variant: str
    path: Path
    sha256: str
    size_bytes: int
    gzip_bytes: int | None = None
    #: The recipe as built, serialised by :mod:`toolkit.compress` (its own shape).
    config: Mapping[str, object] = field(default_factory=dict)
    accuracy: float | None = None
    eval_samples: int | None = None
    compress_seconds: float | None = None
    details: Mapping[str, object] = field(default_factory=dict)
    parameters: int | None = None
    nonzero_parameters: int | None = None
    macs: int | None = None
    fidelity: Fidelity | None = None
    calibration: Mapping[str, object] | None = None
    runtime_compat: list[RuntimeCheck] = field(default_factory=list)
    #: Every operator code in the file with its version: what decides which runtime can load it.
    ops: list[OpVersion] = field(default_factory=list)
    #: The version of each package that built the file, and edge's
    #: (:mod:`toolkit.compress._toolchain`); empty for a file described before it was kept.
    toolchain: Mapping[str, str] = field(default_factory=dict)

    @property
    def oldest_runtime(self) -> str | None:
        """The oldest runtime this file was checked to load and compute correctly under.

        tflite-runtime is the older line (2.14 predates ai-edge-litert 1.x and 2.x).
        """
        passed = [c for c in self.runtime_compat if c.get("ok") and c.get("name")]
        if not passed:
            return None
        oldest = min(passed, key=lambda c: (c["name"] != "tflite-runtime",
                                            _version_key(str(c.get("version", "")))))
        return f"{oldest['name']} {oldest.get('version', '')}".strip()

    @property
    def board_name(self) -> str:
        """The file name on the board: content-addressed, with the suffix the agent chooses
        its runtime by (``.onnx``: onnxruntime)."""
        return f"{self.sha256}{'.onnx' if self.path.suffix == '.onnx' else '.tflite'}"

    def to_dict(self) -> ArtifactEntry:
        """The manifest's entry of this file (a copy: changing it leaves the artifact as it is)."""
        entry: ArtifactEntry = {
            "recipe": str(self.config.get("recipe", self.variant)), "variant": self.variant,
            "sha256": self.sha256, "size_bytes": self.size_bytes, "gzip_bytes": self.gzip_bytes,
            "config": self.config}
        # Absent without labels, not null.
        if self.accuracy is not None:
            entry["accuracy"] = self.accuracy
        if self.eval_samples is not None:
            entry["eval_samples"] = self.eval_samples
        entry["compress_seconds"] = self.compress_seconds
        entry["details"] = self.details
        entry["parameters"] = self.parameters
        entry["nonzero_parameters"] = self.nonzero_parameters
        entry["macs"] = self.macs
        entry["fidelity"] = self.fidelity
        entry["calibration"] = self.calibration
        entry["runtime_compat"] = self.runtime_compat
        entry["ops"] = self.ops
        entry["file"] = self.path.name
        entry["oldest_runtime"] = self.oldest_runtime
        entry["toolchain"] = dict(self.toolchain)
        return copy.deepcopy(entry)


@dataclass(frozen=True, kw_only=True)
class FailedVariant:
    """A variant that could not be built: which recipe, at which stage, and why.

    It still travels with the run (one failed record per target), so the report and
    the store show what was asked for and did not come out, beside what was measured.
    """

    variant: str
    config: Mapping[str, object]
    stage: str  # "compress": conversion failed, or the converted file does not load
    error: str

    def to_dict(self) -> FailedEntry:
        return copy.deepcopy(FailedEntry(variant=self.variant, config=self.config,
                                         stage=self.stage, error=self.error))

    def record(self, target: str) -> ResultRecord:
        """The failed result record of this variant on ``target``."""
        return ResultRecord(target=target, recipe=self.variant, status=Status.FAILED,
                            stage=Stage(self.stage), error=f"not built: {self.error}",
                            artifact={"config": self.config})


def describe_artifact(variant: str, path: Path, *, config: Mapping[str, object] | None = None,
                      accuracy: float | None = None, eval_samples: int | None = None,
                      compress_seconds: float | None = None,
                      details: Mapping[str, object] | None = None,
                      calibration: Mapping[str, object] | None = None,
                      fidelity: Mapping[str, object] | None = None,
                      runtime_compat: Sequence[Mapping[str, object]] = (),
                      parameters: int | None = None, nonzero_parameters: int | None = None,
                      macs: int | None = None,
                      toolchain: Mapping[str, str] | None = None) -> Artifact:
    """The file at ``path`` with what it is (hash, sizes, operators) and what is known of it.

    ``fidelity`` and ``runtime_compat`` are the host's checks as :mod:`toolkit.compress`
    computed them (:class:`~toolkit.results.facts.Fidelity`,
    :class:`~toolkit.results.facts.RuntimeCheck`); ``toolchain`` the versions of what
    built it (:func:`toolkit.compress._toolchain.built_with`).
    """
    # gzip size shows what unstructured sparsity saves on the wire and on disk.
    return Artifact(variant=variant, path=path, sha256=sha256_file(path),
                    size_bytes=path.stat().st_size, gzip_bytes=gzip_size(path),
                    ops=op_versions(path), config={} if config is None else config,
                    accuracy=accuracy,
                    eval_samples=eval_samples, compress_seconds=compress_seconds,
                    details={} if details is None else details, calibration=calibration,
                    fidelity=None if fidelity is None else fidelity_of(fidelity),
                    runtime_compat=[runtime_check_of(check) for check in runtime_compat],
                    parameters=parameters, nonzero_parameters=nonzero_parameters, macs=macs,
                    toolchain={} if toolchain is None else dict(toolchain))


#: gzip's fixed header (10 bytes, no file name) and trailer (CRC-32, length).
_GZIP_FRAME_BYTES = 18


def gzip_size(path: Path) -> int:
    """The length of ``gzip.compress(data, compresslevel=9, mtime=0)`` of the file, read in
    blocks: the same deflate stream, never the whole file (a large model) in memory."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    size = _GZIP_FRAME_BYTES
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            size += len(deflate.compress(block))
    return size + len(deflate.flush())


def op_versions(path: Path) -> list[OpVersion]:
    """``[{"op": "CONV_2D", "version": 3}, ...]`` as the file's operator codes say.

    Read with the flatbuffer schema ai-edge-litert ships, through a read-only map of the
    file (only the pages holding the codes are read); a file it cannot parse has none.
    An ``.onnx`` lists its operator types with their opset's version.
    """
    if path.suffix == ".onnx":
        from toolkit.model.onnx_file import onnx_op_versions

        return onnx_op_versions(path)
    from ai_edge_litert import schema_py_generated as schema

    try:
        with open(path, "rb") as handle, \
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            model = schema.Model.GetRootAs(data, 0)
            codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
            return [{"op": operator_name(code), "version": code.Version()} for code in codes]
    except Exception:  # noqa: BLE001 - a malformed flatbuffer raises anything from struct to index
        return []


class OperatorCode(Protocol):
    """What is read of a flatbuffer ``OperatorCode`` (ai-edge-litert's generated schema,
    whose method names these are)."""

    def BuiltinCode(self) -> int: ...
    def DeprecatedBuiltinCode(self) -> int: ...
    def CustomCode(self) -> bytes | None: ...
    def Version(self) -> int: ...


def operator_name(code: OperatorCode) -> str:
    """``CONV_2D`` (or ``CUSTOM:name``) for a flatbuffer ``OperatorCode``."""
    # Codes above 127 live in builtin_code; older files only fill the deprecated byte.
    number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _builtin_names().get(number, f"BUILTIN_{number}")
    if name == "CUSTOM":
        name = f"CUSTOM:{(code.CustomCode() or b'').decode('utf-8', 'replace')}"
    return name


@functools.cache
def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {value: name for name, value in vars(schema.BuiltinOperator).items()
            if not name.startswith("_")}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class ManifestModel(TypedDict):
    """The model the variants were built from (its stem, path and sha256) and, for a torch
    model, the names of its outputs in the order every variant returns them."""

    name: str
    path: str
    sha256: str
    outputs: NotRequired[list[str]]


class FailedEntry(TypedDict):
    """A variant that could not be built (:class:`FailedVariant`)."""

    variant: str
    config: Mapping[str, object]
    stage: str
    error: str


class Candidate(TypedDict, total=False):
    """A candidate tried within an accuracy budget: skipped with why, or built and judged."""

    recipe: Required[str]
    skipped: str
    size_bytes: int
    size_ratio: float
    accuracy: float | None
    drop_points: float | None  # None: the file has no accuracy figure
    runs_on_every_runtime: bool
    within_budget: bool


class Selection(TypedDict):
    """``edge compress --max-accuracy-drop``: the budget (points), fp32's accuracy, every
    candidate tried in order, and the recipe chosen."""

    max_accuracy_drop_points: float
    baseline_accuracy: float
    tried: list[Candidate]
    chosen: str


class Manifest(TypedDict, total=False):
    """``manifest.json``: the model, one entry per variant built, the ones that failed, and
    with ``--max-accuracy-drop`` the ``selection``."""

    manifest_version: Required[int]
    model: Required[ManifestModel]
    variants: Required[list[ArtifactEntry]]
    failed: list[FailedEntry]
    selection: Selection


def write_manifest(bundle_dir: Path, source: ModelSource, artifacts: list[Artifact],
                   failed: list[FailedVariant] | None = None, *,
                   selection: Selection | None = None) -> Path:
    """``manifest.json``: the model, one entry per variant, and the ``selection`` if any.

    ``failed``: the variants that could not be built, each with its stage and reason.
    """
    manifest: Manifest = {
        "manifest_version": MANIFEST_VERSION,
        "model": {"name": source.name, "path": str(source.path), "sha256": source.sha256},
        "variants": [artifact.to_dict() for artifact in artifacts]}
    if source.output_names:
        manifest["model"]["outputs"] = list(source.output_names)
    if failed:
        manifest["failed"] = [f.to_dict() for f in failed]
    if selection is not None:
        manifest["selection"] = selection
    path = bundle_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(path: Path) -> Manifest:
    """The manifest at ``path``; a :class:`UsageError` in one line when it cannot be read, is
    not a manifest, or is of a version newer than :data:`MANIFEST_VERSION`.

    A manifest without ``manifest_version`` (written before the field) reads as version 1.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"manifest {path} cannot be read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"manifest {path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("variants"), list) \
            or not isinstance(document.get("model"), dict):
        raise UsageError(f"{path} is not an edge manifest (no model and variants)")
    version = document.setdefault("manifest_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UsageError(f"manifest {path} has version {version!r}, not a whole number >= 1")
    if version > MANIFEST_VERSION:
        raise UsageError(f"manifest {path} has version {version}; this edge reads version "
                         f"{MANIFEST_VERSION} and older: upgrade edge")
    return cast(Manifest, document)
