"""manifest.json carries its version: edge writes it, reads older manifests without it as
version 1, and refuses a newer one in one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.artifacts.bundle import (
    MANIFEST_VERSION,
    Artifact,
    FailedVariant,
    read_manifest,
    write_manifest,
)
from toolkit.errors import UsageError
from toolkit.model.load import ModelSource


def _artifact() -> Artifact:
    return Artifact(variant="int8", path=Path("/tmp/int8.tflite"), sha256="b" * 64,
                    size_bytes=30_000, config={"recipe": "int8"}, accuracy=0.96,
                    eval_samples=360, runtime_compat=[{"name": "ai-edge-litert",
                                                       "version": "2.3.0", "ok": True}],
                    ops=[{"op": "CONV_2D", "version": 3}])


def _written(folder: Path) -> Path:
    source = ModelSource(path=Path("/src/digits_cnn.py"), sha256="f" * 64)
    failed = [FailedVariant(variant="int4-weight", config={"recipe": "int4-weight"},
                            stage="compress", error="no int4 kernel")]
    return write_manifest(folder, source, [_artifact()], failed)


def test_edge_writes_the_manifest_version_and_reads_its_manifest_back(tmp_path: Path) -> None:
    path = _written(tmp_path)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["manifest_version"] == MANIFEST_VERSION == 1
    manifest = read_manifest(path)
    assert manifest == written
    assert manifest["model"] == {"name": "digits_cnn", "path": "/src/digits_cnn.py",
                                 "sha256": "f" * 64}
    [variant] = manifest["variants"]
    assert (variant["variant"], variant["recipe"], variant["file"]) == ("int8", "int8",
                                                                        "int8.tflite")
    assert variant["oldest_runtime"] == "ai-edge-litert 2.3.0"
    assert manifest["failed"] == [{"variant": "int4-weight", "config": {"recipe": "int4-weight"},
                                   "stage": "compress", "error": "no int4 kernel"}]


def test_the_manifest_names_a_torch_models_outputs_in_their_order(tmp_path: Path) -> None:
    source = ModelSource(path=Path("/src/detector.py"), sha256="f" * 64,
                         output_names=("logits", "boxes"))
    manifest = read_manifest(write_manifest(tmp_path, source, [_artifact()]))
    assert manifest["model"]["outputs"] == ["logits", "boxes"]


def test_a_manifest_written_before_the_version_field_reads_as_version_1(tmp_path: Path) -> None:
    path = _written(tmp_path)
    older = json.loads(path.read_text(encoding="utf-8"))
    del older["manifest_version"]
    path.write_text(json.dumps(older), encoding="utf-8")
    manifest = read_manifest(path)
    assert manifest["manifest_version"] == 1
    assert manifest["variants"] == older["variants"]


def test_a_manifest_of_a_newer_edge_is_refused_in_one_line_naming_the_file(
        tmp_path: Path) -> None:
    path = _written(tmp_path)
    newer = {**json.loads(path.read_text(encoding="utf-8")), "manifest_version": 2}
    path.write_text(json.dumps(newer), encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        read_manifest(path)
    assert str(caught.value) == (f"manifest {path} has version 2; this edge reads version 1 "
                                 "and older: upgrade edge")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("text", "says"), [
    ('{"manifest_version": "2", "model": {}, "variants": []}', "has version '2', not a whole"),
    ('{"manifest_version": true, "model": {}, "variants": []}', "has version True, not a whole"),
    ('{"variants": []}', "is not an edge manifest"),
    ("[1, 2]", "is not an edge manifest"),
    ("{", "is not JSON"),
])
def test_a_malformed_manifest_is_refused_in_one_line(tmp_path: Path, text: str,
                                                     says: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=says) as caught:
        read_manifest(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"manifest .*manifest.json cannot be read"):
        read_manifest(tmp_path / "manifest.json")
