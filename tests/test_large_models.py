"""Large models (issue 26, item 13): one copy on disk, a fraction of the memory, progress in a
CI log, the disk and memory checked before anything starts.

``benchmarks/large_model.py`` measures the whole effect on a 2 GiB model; these tests hold
each mechanism on small files.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import re
import sys
import time
import types
import weakref
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from device_agent.accelerators import PROBE_MODEL
from toolkit import links
from toolkit.artifacts.bundle import ARTIFACT_MODE, gzip_size
from toolkit.boards.board import LocalBoard
from toolkit.boards.targets import load_target
from toolkit.boards.transfer import upload_all
from toolkit.cli.main import main
from toolkit.cli.progress import LiveProgress
from toolkit.compress import _convert, evaluate
from toolkit.compress._cache import ConversionCache
from toolkit.compress._recipes import parse_chain
from toolkit.compress._transform import TransformContext, apply_transform
from toolkit.errors import CompressError, HostResourceError
from toolkit.model.load import load_model_source
from toolkit.run import resources

REPO = Path(__file__).resolve().parent.parent
GIB = 2**30


def inode(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


# -- one copy on disk --------------------------------------------------------------------

def test_place_links_where_it_may_and_copies_where_it_must(tmp_path: Path) -> None:
    source = tmp_path / "model.tflite"
    source.write_bytes(b"weights" * 1000)
    assert links.place(source, tmp_path / "linked") == "link"
    assert inode(tmp_path / "linked") == inode(source)
    # A user's own file is never linked: rewritten in place, it would change the run's.
    how = links.place(source, tmp_path / "copied", link=False)
    assert how in ("reflink", "copy")
    assert inode(tmp_path / "copied") != inode(source)
    assert (tmp_path / "copied").read_bytes() == source.read_bytes()


def test_place_replaces_the_destination_and_copies_across_file_systems(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "model.tflite"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    destination = tmp_path / "old"
    destination.write_bytes(b"an older file, longer than nothing")

    def cross_device(*_args: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    assert links.place(source, destination) in ("reflink", "copy")
    assert destination.read_bytes() == source.read_bytes()
    # Neither a reflink nor the kernel's copy: the copy in user space still arrives whole.
    monkeypatch.setattr(links.fcntl, "ioctl", cross_device)
    monkeypatch.setattr(os, "copy_file_range", cross_device, raising=False)
    assert links.place(source, destination) == "copy"
    assert destination.read_bytes() == source.read_bytes()


def test_the_conversion_cache_and_the_run_folder_share_one_file(tmp_path: Path) -> None:
    built = tmp_path / "run-1" / "fp32.tflite"
    built.parent.mkdir()
    built.write_bytes(b"converted" * 4096)
    digest = hashlib.sha256(built.read_bytes()).hexdigest()
    cache = ConversionCache(tmp_path / "cache")
    cache.store("k", built, {"variant": "fp32", "sha256": digest})
    assert inode(tmp_path / "cache" / "k" / "model.tflite") == inode(built)
    again = tmp_path / "run-2" / "fp32.tflite"
    again.parent.mkdir()
    assert cache.fetch("k", again) == {"variant": "fp32", "sha256": digest}
    assert inode(again) == inode(built)


def test_a_cached_file_changed_through_another_name_is_not_handed_out(tmp_path: Path) -> None:
    built = tmp_path / "fp32.tflite"
    built.write_bytes(b"converted" * 4096)
    cache = ConversionCache(tmp_path / "cache")
    cache.store("k", built, {"sha256": hashlib.sha256(built.read_bytes()).hexdigest()})
    with open(built, "r+b") as rewrite:  # a user editing the run folder's file in place
        rewrite.write(b"X")
    assert cache.fetch("k", tmp_path / "again.tflite") is None
    assert not (tmp_path / "cache" / "k").exists()


def test_the_local_board_links_a_file_upload_and_checks_it_as_any_upload(
        tmp_path: Path) -> None:
    model = tmp_path / "run" / "fp32.tflite"
    model.parent.mkdir()
    model.write_bytes(os.urandom(100_000))
    name = hashlib.sha256(model.read_bytes()).hexdigest() + ".tflite"
    board = LocalBoard(load_target("local"), home=tmp_path / "board")
    placements: list[tuple[str, str, Path | bytes]] = [
        ("cache", name, model), ("cache", "job.json", b'{"job": 1}')]
    assert upload_all(board, placements) == [True, True]
    assert inode(tmp_path / "board" / "cache" / name) == inode(model)
    assert (tmp_path / "board" / "cache" / "job.json").read_bytes() == b'{"job": 1}'
    assert upload_all(board, placements) == [False, False]  # already there, by hash
    assert sorted(p.name for p in (tmp_path / "board" / "cache").iterdir()) == sorted(
        ["job.json", name])  # no temporary left


def test_a_tflite_given_as_is_is_copied_not_linked_and_is_not_executable(
        tmp_path: Path) -> None:
    from toolkit.compress._from_tflite import build_from_tflite

    given = tmp_path / "model.tflite"
    given.write_bytes(PROBE_MODEL)
    given.chmod(0o755)
    folder = tmp_path / "artifacts"
    folder.mkdir()
    [artifact] = build_from_tflite(load_model_source(given), [parse_chain("fp32")], folder)
    assert inode(artifact.path) != inode(given)
    assert artifact.path.stat().st_mode & 0o777 == ARTIFACT_MODE


# -- memory ---------------------------------------------------------------------------------

def test_gzip_size_is_gzip_level_9_without_reading_the_file_whole(tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024) + bytes(3 * 1024 * 1024) + b"tail"
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert gzip_size(path) == len(gzip.compress(data, compresslevel=9, mtime=0))
    (tmp_path / "empty").write_bytes(b"")
    assert gzip_size(tmp_path / "empty") == len(gzip.compress(b"", compresslevel=9, mtime=0))


def fake_litert(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """litert_torch replaced by a converter that records its options and writes a file."""
    calls: list[dict[str, Any]] = []

    class Converted:
        def export(self, path: str) -> None:
            Path(path).write_bytes(b"TFL3")

    def convert(_module: object, _example: object, **options: Any) -> Converted:
        calls.append(options)
        return Converted()

    monkeypatch.setitem(sys.modules, "litert_torch", types.SimpleNamespace(convert=convert))
    return calls


def test_models_of_1_gib_and_more_take_the_converters_low_memory_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    calls = fake_litert(monkeypatch)
    module = torch.nn.Linear(256, 256)  # 263 KB of weights
    assert _convert.weight_bytes(module) == (256 * 256 + 256) * 4
    assert _convert._fp32(module, (torch.ones(1, 256),), tmp_path / "small.tflite") == {}
    monkeypatch.setattr(_convert, "LARGE_MODEL_BYTES", _convert.weight_bytes(module))
    details = _convert._fp32(module, (torch.ones(1, 256),), tmp_path / "large.tflite")
    assert [call["lightweight_conversion"] for call in calls] == [False, True]
    assert "lightweight_conversion" in details["conversion"]


def test_conversions_that_only_read_the_model_do_not_copy_it() -> None:
    from toolkit.compress._build import changes_module

    assert [changes_module(parse_chain(recipe)) for recipe in
            ("fp32", "fp16", "int8-dynamic", "int4-weight", "int8", "qat", "int8-mixed",
             "prune:0.5+fp16")] == [False, False, False, False, True, True, True, True]


def test_files_of_1_gib_and_more_run_on_the_hosts_builtin_kernels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """XNNPACK packs its own copy of every weight: a 2 GiB file cost 4 GiB to check."""
    import numpy as np
    from ai_edge_litert import interpreter as litert

    model = tmp_path / "probe.tflite"
    model.write_bytes(PROBE_MODEL)
    made: list[dict[str, Any]] = []
    real = litert.Interpreter

    def interpreter(**options: Any) -> Any:
        made.append(options)
        return real(**options)

    monkeypatch.setattr(litert, "Interpreter", interpreter)
    inputs = [tuple(np.ones(d["shape"], np.float32)
                    for d in real(model_path=str(model)).get_input_details())]
    small = list(evaluate.tflite_outputs(model, inputs))
    monkeypatch.setattr(evaluate, "LARGE_FILE_BYTES", model.stat().st_size)
    assert evaluate.builtin_kernels_only(model)
    large = list(evaluate.tflite_outputs(model, inputs))
    assert "experimental_op_resolver_type" not in made[0]
    assert made[1]["experimental_op_resolver_type"] == \
        litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    assert np.allclose(small[0][0], large[0][0])


def test_torch_export_no_longer_holds_the_last_model_it_traced() -> None:
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
    torch.export.export(module, (torch.ones(1, 8),))
    weights = weakref.ref(module[0].weight)
    del module
    _convert.forget_last_export()
    import gc

    gc.collect()
    assert weights() is None


def test_a_deploy_lets_the_model_go_before_the_boards_measure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch module of a large model must not sit in memory beside the local board's
    agent, which loads the variant's file (twice its size with XNNPACK)."""
    from toolkit.run import execute as flow
    from toolkit.run import prepare as preparing
    from toolkit.run.deploy import deploy

    model = tmp_path / "tiny.py"
    model.write_text("import torch\n\ndef build_model():\n    return torch.nn.Linear(4, 2)\n\n"
                     "def example_input():\n    return (torch.ones(1, 4),)\n")
    held: list[weakref.ref[Any]] = []
    alive_while_measuring: list[bool] = []

    def prepare(source: Any, *_args: Any, **_kwargs: Any) -> tuple[list[Any], list[Any],
                                                                   dict[str, Path]]:
        held.append(weakref.ref(source.module))
        return [], [], {}  # nothing built: nothing to send, but the boards' step still runs

    def run_boards(*args: Any, **kwargs: Any) -> Any:
        alive_while_measuring.append(held[0]() is not None)
        return real_run_boards(*args, **kwargs)

    real_run_boards = flow._run_boards
    monkeypatch.setattr(preparing, "prepare_model", prepare)
    monkeypatch.setattr(flow, "_run_boards", run_boards)
    deploy(model, targets=["local"], recipes="fp32", out_dir=tmp_path / "out")
    assert alive_while_measuring == [False]


# -- progress in a CI log -----------------------------------------------------------------

def test_outside_a_terminal_progress_is_a_line_every_interval(
        capsys: pytest.CaptureFixture[str]) -> None:
    with LiveProgress(enabled=True, log_interval=0.2) as progress:
        progress("compress fp32: converting (fp32)")
        time.sleep(0.7)
        progress("local: measuring fp32")
        time.sleep(0.3)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 3, lines
    assert all(re.fullmatch(r"edge: \d+:\d\d .+ \(\d+:\d\d\)", line) for line in lines), lines
    assert lines[0].startswith("edge: 0:00 compress fp32: converting (fp32) (0:00)")
    assert "local: measuring fp32" in lines[-1]


def test_a_command_shorter_than_the_interval_writes_no_progress(
        capsys: pytest.CaptureFixture[str]) -> None:
    with LiveProgress(enabled=True) as progress:
        progress("loading model.py")
    with LiveProgress(enabled=False, log_interval=0.01) as progress:
        progress("quiet")
        time.sleep(0.1)
    assert capsys.readouterr().err == ""


# -- disk and memory, before anything starts ---------------------------------------------

def tiny_model(tmp_path: Path) -> Path:
    model = tmp_path / "tiny.py"
    model.write_text("import torch\n\ndef build_model():\n    return torch.nn.Linear(64, 64)\n\n"
                     "def example_input():\n    return (torch.ones(1, 64),)\n")
    return model


def test_a_disk_short_of_the_variants_refuses_the_run_and_says_by_how_much(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = load_model_source(tiny_model(tmp_path))
    chains = [parse_chain("fp32"), parse_chain("fp16")]
    weights = (64 * 64 + 64) * 4
    free = types.SimpleNamespace(free=resources.RUN_FOLDER_BYTES)
    monkeypatch.setattr(resources.shutil, "disk_usage", lambda _path: free)
    with pytest.raises(HostResourceError) as refused:
        resources.check_resources([(source, chains)], out_dir=tmp_path / "out")
    # Two variants and the fp32 file fp16 is rewritten from, beside the run folder's files.
    assert resources.disk_shortages([(source, chains)], out_dir=tmp_path / "out")[0].needed \
        == 3 * weights + resources.RUN_FOLDER_BYTES
    assert str(refused.value).startswith(f"not enough disk for {tmp_path / 'out'}: this run "
                                         "needs about 64.0 MiB")
    assert "short" in str(refused.value) and str(refused.value).endswith("nothing was written")
    assert refused.value.exit_code == 3


def test_the_cache_and_the_local_board_cost_disk_only_on_another_file_system(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = load_model_source(tiny_model(tmp_path))
    plan = [(source, [parse_chain("fp32")])]
    devices = {tmp_path / "out": 1, tmp_path / "cache": 1, tmp_path / "board": 2}
    monkeypatch.setattr(resources, "_device", lambda folder: (devices[folder], folder))
    monkeypatch.setattr(resources.shutil, "disk_usage",
                        lambda _path: types.SimpleNamespace(free=0))
    found = resources.disk_shortages(plan, out_dir=tmp_path / "out",
                                     cache_dir=tmp_path / "cache",
                                     board_dirs=[tmp_path / "board"])
    weights = (64 * 64 + 64) * 4
    assert {s.where: s.needed for s in found} == {
        f"for {tmp_path / 'out'}": weights + resources.RUN_FOLDER_BYTES,
        f"for {tmp_path / 'board'}": weights}  # the cache shares the output's disk: links


def test_memory_short_of_what_the_conversion_adds_refuses_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = load_model_source(tiny_model(tmp_path))
    weights = (64 * 64 + 64) * 4
    monkeypatch.setattr(resources, "available_memory", lambda: weights)
    [short] = resources.memory_shortages([(source, [parse_chain("fp32")])])
    assert (short.what, short.needed, short.available) == ("memory", 4 * weights, weights)
    assert str(short).startswith("not enough memory on this machine: this run needs about")
    # At 1 GiB and more the low-memory conversion adds about the file's size (mapped to be
    # checked); a PT2E conversion or fine-tuning copies the model first.
    assert resources.memory_factor(source, parse_chain("int8")) == 5.0
    monkeypatch.setattr(resources, "model_bytes", lambda _source: 2 * GIB)
    assert resources.memory_factor(source, parse_chain("fp32")) == 1.0
    monkeypatch.setattr(resources, "available_memory", lambda: None)  # not known here
    assert resources.memory_shortages([(source, [parse_chain("fp32")])]) == []


def test_available_memory_is_the_systems_lowered_to_the_cgroups_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = resources.available_memory()
    assert found is None or found > 0
    monkeypatch.setattr(resources, "_cgroup_room", lambda: [123])
    assert resources.available_memory() == 123


def test_deploy_refuses_at_once_in_one_line_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(tmp_path)
    monkeypatch.setattr(resources.shutil, "disk_usage",
                        lambda _path: types.SimpleNamespace(free=1024))
    result = CliRunner().invoke(main, ["deploy", str(model), "--recipe", "fp32",
                                       "-o", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 3
    [line] = result.stderr.splitlines()
    assert re.fullmatch(r"edge: error: not enough disk for .*out: this run needs about "
                        r"64\.\d MiB, 1\.0 KiB is available \(64\.\d MiB short\); "
                        r"nothing was written", line), line
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "local-board").exists()


# -- fine-tuning out of memory ----------------------------------------------------------------

@pytest.mark.parametrize("failure", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't "
                 "allocate memory: you tried to allocate 5138022400 bytes. Error code 12 "
                 "(Cannot allocate memory)")], ids=["MemoryError", "torch allocator"])
def test_fine_tuning_out_of_memory_names_the_batch_as_the_knob(
        failure: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from toolkit.compress import _transform

    def out_of_memory(*_args: object) -> None:
        raise failure

    monkeypatch.setattr(_transform, "_train", out_of_memory)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    example = (torch.ones(1, 8),)
    context = TransformContext(teacher=module, example=example,
                               train_data=lambda: [((torch.ones(1, 8),), 0)] * 4,
                               progress=lambda _: None)
    [step] = parse_chain("prune-channels:0.5").transforms
    with pytest.raises(CompressError) as raised:
        apply_transform(module, step, context)
    message = str(raised.value)
    assert message.startswith("prune-channels: fine-tuning ran out of memory in batches of "
                              "32 samples")
    assert message.endswith("add :batch=N to the step, e.g. prune-channels:0.5:batch=8")
    parse_chain("prune-channels:0.5:batch=8")  # the advice is a recipe edge accepts


def test_other_runtime_errors_of_fine_tuning_are_not_called_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from toolkit.compress import _transform

    def broken(*_args: object) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(_transform, "_train", broken)
    module = torch.nn.Linear(8, 4)
    context = TransformContext(teacher=module, example=(torch.ones(1, 8),),
                               train_data=lambda: [((torch.ones(1, 8),), 0)],
                               progress=lambda _: None)
    [step] = parse_chain("distill+int8").transforms
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        apply_transform(module, step, context)


def test_benchmark_script_help() -> None:
    """``benchmarks/large_model.py`` parses its options (it is run by hand: minutes)."""
    import subprocess

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "large_model.py"),
                           "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "--mb" in done.stdout, done.stderr
