"""Shared fixtures (isolated user folders, one real converted model per session) and the tiers.

Every test is in exactly one tier, a marker set here at collection:

- ``unit`` (the default ``pytest``): in-process, no sshd, no model conversion, no server;
- ``integration``: a real sshd on loopback, a real runtime, a converted model, PostgreSQL,
  labgrid or Chromium; set from the fixtures a test uses (:data:`INTEGRATION_FIXTURES`,
  their dependencies included) or by an explicit ``@pytest.mark.integration``;
- ``e2e``: end to end, many conversions; ``@pytest.mark.e2e`` or the older ``slow``.

``pytest -m integration``, ``pytest -m e2e``; every tier: ``pytest -m "unit or integration
or e2e"`` (what ``scripts/test-all`` and CI run).
"""

from __future__ import annotations

import importlib
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from .lab import Sshd

REPO = Path(__file__).resolve().parent.parent
DIGITS_MODEL = REPO / "examples" / "digits_cnn.py"

TIERS = ("unit", "integration", "e2e")
#: Fixtures that start or build something heavy: a test using one (directly or through
#: another fixture) is an integration test.
INTEGRATION_FIXTURES = frozenset({
    # real OpenSSH servers on loopback or in network namespaces
    "sshd", "own_sshd", "jump", "two_boards", "boards", "offline_board", "two_key_sshd",
    # models converted with litert-torch
    "digits_fp32_tflite", "digits_pair", "mobilenet_fp32_tflite", "first_build", "digits_run",
    "digits_bundle", "learned_bundle",
    # a second Python with tflite-runtime 2.14 (a venv built once per machine)
    "tflite_runtime_214",
    # a Python 3.8 board (pyenv's 3.8 with the last cp38 runtimes, built once per machine)
    "python38", "python38_board", "agent_python", "floor_python",
    # servers: PostgreSQL, a labgrid coordinator with its exporter
    "postgres_url", "lab",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test its one tier marker (see the module docstring)."""
    for item in items:
        named = {mark.name for mark in item.iter_markers()}
        if named & {"e2e", "slow"}:
            tier = "e2e"
        elif "integration" in named or INTEGRATION_FIXTURES & set(item.fixturenames):
            tier = "integration"
        else:
            tier = "unit"
        stray = named & set(TIERS) - {tier}
        if stray:
            raise pytest.UsageError(f"{item.nodeid}: marked {sorted(stray)} but its tier is "
                                    f"{tier}: one tier per test")
        item.add_marker(tier)


@pytest.fixture(autouse=True, scope="session")
def interrupts_as_in_a_terminal() -> Iterator[None]:
    """SIGINT and SIGHUP handled as in a terminal, however the suite was started.

    A suite started in the background from a script (``cmd &``, as a CI runner may) inherits
    SIGINT ignored, one started under ``nohup`` SIGHUP, and so does every process it starts:
    the tests of Ctrl-C and of a closed terminal would then test ``nohup`` instead (edge
    rightly keeps an ignored signal ignored).
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGHUP)}
    if previous[signal.SIGINT] is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if previous[signal.SIGHUP] is signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def isolated_user_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's store, target folder and working directory out of every test."""
    monkeypatch.delenv("EDGE_STORE", raising=False)
    monkeypatch.delenv("EDGE_TARGETS_DIR", raising=False)
    # Converted variants of other runs (the user's, another test's) must not be reused.
    monkeypatch.setenv("EDGE_CONVERSION_CACHE", str(tmp_path / "conversion-cache"))
    # The user's ~/.ssh/config must not steer a test's connection anywhere.
    monkeypatch.setenv("EDGE_SSH_CONFIG", str(tmp_path / "no-ssh-config"))
    # The local board (its work folder, cache and lease) is the test's own.
    monkeypatch.setenv("EDGE_LOCAL_BOARD", str(tmp_path / "local-board"))
    # Its leases too: every board on this machine has one machine id, and so one lease
    # folder in /tmp/edge-leases, unless the board's environment names another.
    monkeypatch.setenv("EDGE_LEASE_ROOT", str(tmp_path / "leases"))
    # A terminal setting of the user's or the CI's must not box the plain tables tests read.
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.chdir(tmp_path)


#: The refusals a unit test runs under, set before its first fixture is (see below).
_REFUSALS = pytest.StashKey[pytest.MonkeyPatch]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A unit test that converts a model (in this process) or starts an sshd, Chromium or
    PostgreSQL fails at once, saying which tier it belongs to: the tiers stay honest.

    Set here, before any of the test's fixtures is set up: a module's or a session's fixture
    made for it (an sshd of a module's own) is refused too, as an autouse fixture of the
    test's could not (fixtures of wider scope are set up before it).
    """
    if item.get_closest_marker("unit") is None:
        return

    def refuse(what: str) -> Any:
        def refused(*_args: object, **_kwargs: object) -> NoReturn:
            # pytest.fail is not an Exception: no ``except Exception`` in edge can swallow it.
            pytest.fail(f"this unit test {what}: mark it integration (tests/conftest.py)")
        return refused

    from .chromium import Chromium

    patch = item.stash[_REFUSALS] = pytest.MonkeyPatch()
    # By module object: ``toolkit.compress`` as an attribute is the function, not the package.
    for module in ("toolkit.compress._build", "toolkit.compress._mixed"):
        patch.setattr(importlib.import_module(module), "convert", refuse("converts a model"))
    patch.setattr(Sshd, "create", refuse("starts an sshd"))
    patch.setattr(Chromium, "__enter__", refuse("starts Chromium"))
    patch.setattr("tests.postgres.postgres_server", refuse("starts PostgreSQL"))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """The refusals end with the unit test, after its fixtures (and their patches) did."""
    patch = item.stash.get(_REFUSALS, None)
    if patch is not None:
        patch.undo()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real OpenSSH server on a free loopback port, shared by a module's tests."""
    server = Sshd.create(tmp_path_factory.mktemp("sshd"))
    yield server
    server.kill()


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A server of the test's own, for tests that kill it."""
    server = Sshd.create(tmp_path / "sshd")
    yield server
    server.kill()


@pytest.fixture(scope="session")
def digits_fp32_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN converted to a real fp32 .tflite, once per session."""
    from toolkit.compress import Fp32Config, compress
    from toolkit.model.load import load_model_source

    folder = tmp_path_factory.mktemp("digits")
    variant = compress(load_model_source(DIGITS_MODEL), Fp32Config(), folder)
    return variant.path


@pytest.fixture
def tflite_copy(digits_fp32_tflite: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model.tflite"
    shutil.copyfile(digits_fp32_tflite, copy)
    return copy


@pytest.fixture
def tiny_tflite(tmp_path: Path) -> Path:
    """A real model no conversion made: the probe model the agent carries (y = x + x on
    float32 [1, 4]), for unit tests that run jobs on the local board or a fake one."""
    from device_agent.accelerators import PROBE_MODEL

    path = tmp_path / "tiny.tflite"
    path.write_bytes(PROBE_MODEL)
    return path


def python_has(module: str) -> bool:
    return module in sys.modules


@pytest.fixture(scope="session")
def tflite_runtime_214() -> Path:
    """A Python with tflite-runtime 2.14.0 and numpy<2 (the board floor), built once and cached.

    It cannot share the main environment (numpy 2), so it is a venv under the test cache.
    """
    import os
    import subprocess

    cache = Path(os.environ.get("EDGE_TEST_CACHE") or Path.home() / ".cache" / "edge-tests")
    venv = cache / "tflite-runtime-2.14.0"
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if not ready.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "tflite-runtime==2.14.0",
                        "numpy<2"], check=True)
        ready.write_text("tflite-runtime==2.14.0 numpy<2\n")
    return python


#: What a JetPack 5 board's Python 3.8 venv holds: the last lines with cp38 wheels.
PYTHON38_PACKAGES = ("numpy<1.25", "tflite-runtime==2.14.0", "onnxruntime==1.19.2")


@pytest.fixture(scope="session")
def python38() -> Path:
    """pyenv's newest Python 3.8, a bare one as JetPack 5 ships.

    Skipped, saying why, only on a machine without it (CI's image has it).
    """
    import os

    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(root.glob("versions/3.8.*/bin/python"),
                   key=lambda path: int(path.parent.parent.name.split(".")[2]))
    if not found:
        pytest.skip(f"no Python 3.8 under {root}/versions (pyenv install 3.8)")
    return found[-1]


@pytest.fixture(scope="session")
def python38_board(python38: Path) -> Path:
    """A board's Python 3.8 with numpy 1.24, tflite-runtime 2.14.0 and onnxruntime 1.19.2:
    a venv of :func:`python38` under the test cache, built once per machine."""
    import os
    import subprocess

    cache = Path(os.environ.get("EDGE_TEST_CACHE") or Path.home() / ".cache" / "edge-tests")
    venv = cache / "python-3.8-tflite-runtime-2.14.0"
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    wanted = " ".join(PYTHON38_PACKAGES) + "\n"
    if not ready.is_file() or ready.read_text() != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([str(python38), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", *PYTHON38_PACKAGES], check=True)
        ready.write_text(wanted)
    return python


@pytest.fixture(params=["host", "python3.8"])
def agent_python(request: pytest.FixtureRequest) -> str:
    """The board's Python for agent tests: this one, then a JetPack 5's 3.8
    (:func:`python38_board`), so that the agent's own tests run under both."""
    if request.param == "host":
        return sys.executable
    return str(request.getfixturevalue("python38_board"))


@pytest.fixture(params=["python3.11", "python3.8"])
def floor_python(request: pytest.FixtureRequest) -> Path:
    """A board's Python whose only TFLite runtime is tflite-runtime 2.14.0:
    :func:`tflite_runtime_214`, then a JetPack 5's 3.8 (:func:`python38_board`)."""
    if request.param == "python3.11":
        return Path(request.getfixturevalue("tflite_runtime_214"))
    return Path(request.getfixturevalue("python38_board"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server for the session (CI installs it; skipped only without it)."""
    from .postgres import postgres_server, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[str]:
    """An empty database of the test's own on the session's server."""
    import uuid

    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_url.replace("postgresql://",
                                                          "postgresql+psycopg://"),
                                     isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()
