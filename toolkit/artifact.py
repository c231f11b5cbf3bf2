"""Stage 3: the artifact bundle, the deployable files with their manifest.

Each artifact is named by what it is (``fp32.tflite``) in the bundle and by its
sha256 on the board, so a board never confuses two builds of one variant.

Example::

    artifact = describe_artifact("int8", path, config={...}, accuracy=0.98)
    write_manifest(bundle_dir, source, [artifact])
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from device_agent.protocol import sha256_file

from .model import ModelSource


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

    @property
    def board_name(self) -> str:
        """The file name on the board: content-addressed."""
        return f"{self.sha256}.tflite"

    def to_dict(self) -> dict[str, Any]:
        data = {"recipe": self.config.get("recipe", self.variant), **asdict(self)}
        data["file"] = self.path.name
        del data["path"]
        for absent_without_labels in ("accuracy", "eval_samples"):
            if data[absent_without_labels] is None:
                del data[absent_without_labels]
        return data


def describe_artifact(variant: str, path: Path, **known: Any) -> Artifact:
    # gzip size shows what unstructured sparsity saves on the wire and on disk.
    return Artifact(variant=variant, path=path, sha256=sha256_file(path),
                    size_bytes=path.stat().st_size,
                    gzip_bytes=len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)),
                    **known)


def write_manifest(bundle_dir: Path, source: ModelSource, artifacts: list[Artifact]) -> Path:
    manifest = {
        "model": {"name": source.name, "path": str(source.path), "sha256": source.sha256},
        "variants": [artifact.to_dict() for artifact in artifacts],
    }
    path = bundle_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path
