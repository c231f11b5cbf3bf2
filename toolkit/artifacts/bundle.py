"""Stage 3: the artifact bundle, the deployable files with their manifest.

Each artifact is named by what it is (``fp32.tflite``) in the bundle and by its
sha256 on the board, so a board never confuses two builds of one variant.

Example::

    artifact = describe_artifact("int8", path, config={...}, accuracy=0.98)
    write_manifest(bundle_dir, source, [artifact])
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from device_agent.protocol import sha256_file
from toolkit.model.load import ModelSource
from toolkit.results.record import ResultRecord, Stage, Status


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """One deployable ``.tflite`` file and what is known about it before it runs."""

    variant: str
    path: Path
    sha256: str
    size_bytes: int
    gzip_bytes: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    accuracy: float | None = None
    eval_samples: int | None = None
    compress_seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    parameters: int | None = None
    nonzero_parameters: int | None = None
    macs: int | None = None
    fidelity: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    runtime_compat: list[dict[str, Any]] = field(default_factory=list)
    #: Every operator code in the file with its version: what decides which runtime can load it.
    ops: list[dict[str, Any]] = field(default_factory=list)

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
        """The file name on the board: content-addressed."""
        return f"{self.sha256}.tflite"

    def to_dict(self) -> dict[str, Any]:
        data = {"recipe": self.config.get("recipe", self.variant), **asdict(self)}
        data["file"] = self.path.name
        data["oldest_runtime"] = self.oldest_runtime
        del data["path"]
        for absent_without_labels in ("accuracy", "eval_samples"):
            if data[absent_without_labels] is None:
                del data[absent_without_labels]
        return data


@dataclass(frozen=True, kw_only=True)
class FailedVariant:
    """A variant that could not be built: which recipe, at which stage, and why.

    It still travels with the run (one failed record per target), so the report and
    the store show what was asked for and did not come out, beside what was measured.
    """

    variant: str
    config: dict[str, Any]
    stage: str  # "compress": conversion failed, or the converted file does not load
    error: str

    def record(self, target: str) -> ResultRecord:
        """The failed result record of this variant on ``target``."""
        return ResultRecord(target=target, recipe=self.variant, status=Status.FAILED,
                            stage=Stage(self.stage), error=f"not built: {self.error}",
                            artifact={"config": self.config})


def describe_artifact(variant: str, path: Path, **known: Any) -> Artifact:
    # gzip size shows what unstructured sparsity saves on the wire and on disk.
    return Artifact(variant=variant, path=path, sha256=sha256_file(path),
                    size_bytes=path.stat().st_size,
                    gzip_bytes=len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)),
                    ops=op_versions(path), **known)


def op_versions(path: Path) -> list[dict[str, Any]]:
    """``[{"op": "CONV_2D", "version": 3}, ...]`` as the file's operator codes say.

    Read with the flatbuffer schema ai-edge-litert ships; a file it cannot parse has none.
    """
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(path.read_bytes(), 0)
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    except Exception:  # noqa: BLE001 - a malformed flatbuffer raises anything from struct to index
        return []
    return [{"op": operator_name(code), "version": code.Version()} for code in codes]


def operator_name(code: Any) -> str:
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


def write_manifest(bundle_dir: Path, source: ModelSource, artifacts: list[Artifact],
                   failed: list[FailedVariant] | None = None, **extra: Any) -> Path:
    """``manifest.json``: the model, one entry per variant, and ``extra`` sections.

    ``failed``: the variants that could not be built, each with its stage and reason.
    """
    manifest = {
        "model": {"name": source.name, "path": str(source.path), "sha256": source.sha256},
        "variants": [artifact.to_dict() for artifact in artifacts],
        **({"failed": [asdict(f) for f in failed]} if failed else {}),
        **extra,
    }
    path = bundle_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path
