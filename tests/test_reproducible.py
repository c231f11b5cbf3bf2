"""Reproducible artifacts: one model and one recipe give one file, and the host's conversion
cache turns a second build of an unchanged model into copies."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.artifacts.bundle import Artifact
from toolkit.compress import build_artifacts, compress, parse_chain, parse_recipes
from toolkit.compress._cache import CacheKeys, ConversionCache
from toolkit.model.load import load_model_source

from .conftest import DIGITS_MODEL, REPO

RECIPES = "fp32,int8"

DROPOUT_MODEL = '''
import torch
from torch import nn


def build_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(32, 4)).eval()


def example_input():
    return (torch.zeros(1, 16),)


def _data(count, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        x = torch.randn(1, 16, generator=generator)
        yield (x,), int(x[0, :4].argmax())


def calibration_data():
    return _data(32, 1)


def train_data():
    return _data(64, 2)


def eval_data():
    return _data(32, 3)
'''

IN_A_FRESH_PROCESS = '''
import json, logging, sys
from pathlib import Path
from toolkit.compress import build_artifacts, parse_recipes
from toolkit.model.load import load_model_source

converted = []
logging.getLogger("toolkit.compress._build").setLevel(logging.INFO)
logging.getLogger("toolkit.compress._build").addHandler(type("H", (logging.Handler,), {
    "emit": lambda self, record: converted.extend(
        [record.args[0]] if record.getMessage().endswith(": converting") else [])})())
model, recipes, out, cache = sys.argv[1:5]
Path(out).mkdir(parents=True)
artifacts = build_artifacts(load_model_source(model), parse_recipes(recipes), Path(out),
                            cache_dir=Path(cache) if cache else None)
print(json.dumps({"sha256": {a.variant: a.sha256 for a in artifacts}, "converted": converted}))
'''


def build_in_a_fresh_process(out: Path, cache: Path | None) -> dict:
    """What a second ``edge deploy`` does: load the model in a new process and build."""
    done = subprocess.run(
        [sys.executable, "-c", IN_A_FRESH_PROCESS, str(DIGITS_MODEL), RECIPES, str(out),
         str(cache or "")], capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def first_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Artifact]]:
    """fp32 and int8 of the digits CNN, converted into an empty conversion cache."""
    root = tmp_path_factory.mktemp("reproducible")
    (root / "out").mkdir()
    artifacts = build_artifacts(load_model_source(DIGITS_MODEL), parse_recipes(RECIPES),
                                root / "out", cache_dir=root / "cache")
    return root / "cache", artifacts


@pytest.mark.slow
def test_a_fresh_process_converts_the_model_to_the_same_bytes(first_build,
                                                              tmp_path: Path) -> None:
    _cache, artifacts = first_build
    again = build_in_a_fresh_process(tmp_path / "out", cache=None)
    assert again["converted"] == ["fp32", "int8"]
    assert again["sha256"] == {a.variant: a.sha256 for a in artifacts}


@pytest.mark.slow
def test_a_second_build_converts_nothing_and_gives_the_same_files(
        first_build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    cache, artifacts = first_build

    def no_conversion(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a cached variant was converted again")

    # By module object: ``toolkit.compress`` as a dotted path is the function, not the package.
    monkeypatch.setattr(importlib.import_module("toolkit.compress._build"), "compress",
                        no_conversion)
    caplog.set_level(logging.INFO, logger="toolkit.compress._build")
    again = build_artifacts(load_model_source(DIGITS_MODEL), parse_recipes(RECIPES),
                            tmp_path, cache_dir=cache)
    assert [a.to_dict() for a in again] == [a.to_dict() for a in artifacts]
    for first, second in zip(artifacts, again, strict=True):
        assert second.path.parent == tmp_path
        assert second.path.read_bytes() == first.path.read_bytes()
    assert caplog.text.count("reused from the conversion cache") == 2


@pytest.mark.slow
def test_a_second_deploy_in_a_fresh_process_converts_nothing(first_build,
                                                             tmp_path: Path) -> None:
    cache, artifacts = first_build
    again = build_in_a_fresh_process(tmp_path / "out", cache=cache)
    assert again == {"sha256": {a.variant: a.sha256 for a in artifacts}, "converted": []}


def test_the_key_follows_the_weights_file_the_recipe_and_the_data(tmp_path: Path) -> None:
    import torch

    model = tmp_path / "digits_cnn.py"
    shutil.copyfile(DIGITS_MODEL, model)
    shutil.copyfile(DIGITS_MODEL.with_suffix(".pt"), model.with_suffix(".pt"))
    source = load_model_source(model)
    assert source.loaded_files == ((model.with_suffix(".pt").resolve(),
                                    _sha(model.with_suffix(".pt"))),)
    int8, fp32 = parse_chain("int8"), parse_chain("fp32")
    keys = CacheKeys(source)
    assert keys.key(int8) == CacheKeys(load_model_source(DIGITS_MODEL)).key(int8)  # moved
    assert keys.key(int8) != keys.key(fp32)
    # train_data() counts only for chains that fine-tune.
    assert keys._data.keys() == {"eval_data", "calibration_data"}
    weights = torch.load(model.with_suffix(".pt"), weights_only=True)
    weights["classifier.3.bias"][0] += 1e-3
    torch.save(weights, model.with_suffix(".pt"))
    assert CacheKeys(load_model_source(model)).key(int8) != keys.key(int8)


def test_the_cache_evicts_the_least_recently_used_entry(tmp_path: Path) -> None:
    cache = ConversionCache(tmp_path / "cache", max_bytes=2500)
    record = {"sha256": ""}
    for index, name in enumerate(["a", "b", "c"]):
        made = tmp_path / f"{name}.tflite"
        made.write_bytes(bytes([index]) * 1000)
        cache.store(name, made, {**record, "sha256": _sha(made)})
        os.utime(cache.root / name, (1000.0 + index, 1000.0 + index))
    # Storing c evicted a (the oldest); using b now makes c the least recently used.
    assert sorted(p.name for p in cache.root.iterdir()) == ["b", "c"]
    assert cache.fetch("b", tmp_path / "b-again.tflite") is not None
    made = tmp_path / "d.tflite"
    made.write_bytes(b"d" * 1000)
    cache.store("d", made, {"sha256": _sha(made)})
    assert sorted(p.name for p in cache.root.iterdir()) == ["b", "d"]
    assert (cache.hits, cache.misses) == (1, 0)


def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path: Path) -> None:
    cache = ConversionCache(tmp_path / "cache")
    made = tmp_path / "m.tflite"
    made.write_bytes(b"model")
    cache.store("k", made, {"sha256": _sha(made)})
    (cache.root / "k" / "model.tflite").write_bytes(b"flipped")
    assert cache.fetch("k", tmp_path / "out.tflite") is None
    assert not (cache.root / "k").exists() and not (tmp_path / "out.tflite").exists()
    assert cache.fetch("absent", tmp_path / "out.tflite") is None
    assert (cache.hits, cache.misses) == (0, 2)


@pytest.mark.slow
def test_a_fine_tuned_chain_gives_the_same_bytes_whatever_ran_before(tmp_path: Path) -> None:
    import torch

    model = tmp_path / "dropout_mlp.py"
    model.write_text(DROPOUT_MODEL)
    source = load_model_source(model)
    chain = parse_chain("prune:0.5+distill+int8")
    digests = []
    for run in range(2):
        torch.rand(run * 1000 + 7)  # whatever the process drew before
        out = tmp_path / f"run{run}"
        out.mkdir()
        digests.append(_sha(compress(source, chain, out).path))
    assert digests[0] == digests[1]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
