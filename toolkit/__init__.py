"""edge: compress PyTorch models, run them on boards, report how they really behave.

The stages, one module each: :mod:`~toolkit.model.load` (load) ->
:mod:`~toolkit.compress` -> :mod:`~toolkit.artifacts.bundle` -> :mod:`~toolkit.run.runner`
(with :mod:`device_agent` on the board) -> :mod:`~toolkit.results.record` (one typed record
per target x variant) -> :mod:`~toolkit.results.store` -> :mod:`~toolkit.report.render`;
:func:`deploy` runs them all, and :func:`check_runs` gates a run against a baseline.

Only the errors are imported with the package; every other public name on first use
(:mod:`toolkit._lazy`), so that ``edge --help`` does not wait for torch.
"""

import importlib
from typing import TYPE_CHECKING

from toolkit._lazy import attach
from toolkit.errors import (
    AgentError,
    AuthError,
    BoardBusyError,
    BoardSetupError,
    CheckRefused,
    CompressError,
    EdgeError,
    ExitCode,
    HostKeyError,
    InfrastructureError,
    ModelError,
    OutputError,
    ResultError,
    StoreError,
    TargetError,
    TransferError,
    UsageError,
)

if TYPE_CHECKING:
    from toolkit.boards.targets import Target, load_target
    from toolkit.compress import RECIPES, Fp32Config, Int8StaticConfig, compress, parse_recipes
    from toolkit.gate.check import CheckOutcome, check_runs
    from toolkit.gate.thresholds import Thresholds
    from toolkit.model.load import ModelSource, load_model_source
    from toolkit.results.record import ResultRecord, Status
    from toolkit.results.store import ResultsStore, StoredRun
    from toolkit.run.deploy import DeployOutcome, deploy
else:
    # The subpackage toolkit.compress is light until a variant is built; importing it now,
    # before anything else does, keeps the name ``compress`` here the function (as the
    # eager import did): a later first import of the subpackage would bind the module.
    importlib.import_module(".compress", __name__)
    del globals()["compress"]

#: The heavy public names (torch, numpy, paramiko behind them), imported on first use.
__getattr__, __dir__ = attach(__name__, {
    "CheckOutcome": "gate.check", "Thresholds": "gate.thresholds", "check_runs": "gate.check",
    "RECIPES": "compress", "Fp32Config": "compress", "Int8StaticConfig": "compress",
    "compress": "compress", "parse_recipes": "compress",
    "ModelSource": "model.load", "load_model_source": "model.load",
    "DeployOutcome": "run.deploy", "deploy": "run.deploy",
    "ResultRecord": "results.record", "Status": "results.record",
    "ResultsStore": "results.store", "StoredRun": "results.store",
    "Target": "boards.targets", "load_target": "boards.targets",
}, globals())

__all__ = [
    "AgentError",
    "AuthError",
    "BoardBusyError",
    "BoardSetupError",
    "CheckOutcome",
    "CheckRefused",
    "CompressError",
    "DeployOutcome",
    "EdgeError",
    "ExitCode",
    "Fp32Config",
    "HostKeyError",
    "InfrastructureError",
    "Int8StaticConfig",
    "ModelError",
    "ModelSource",
    "OutputError",
    "RECIPES",
    "ResultError",
    "ResultRecord",
    "ResultsStore",
    "Status",
    "StoreError",
    "StoredRun",
    "Target",
    "TargetError",
    "Thresholds",
    "TransferError",
    "UsageError",
    "check_runs",
    "compress",
    "deploy",
    "load_model_source",
    "load_target",
    "parse_recipes",
]
