"""edge: compress PyTorch models, run them on boards, report how they really behave.

The stages, one module each: :mod:`~toolkit.model` (load) ->
:mod:`~toolkit.compress` -> :mod:`~toolkit.artifact` -> :mod:`~toolkit.runner`
(with :mod:`device_agent` on the board) -> :mod:`~toolkit.results` (one typed record
per target x variant) -> :mod:`~toolkit.store` -> :mod:`~toolkit.report`;
:func:`deploy` runs them all, and :func:`check_runs` gates a run against a baseline.
"""

from .check import CheckOutcome, Thresholds, check_runs
from .compress import RECIPES, Fp32Config, Int8StaticConfig, compress, parse_recipes
from .errors import (
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
from .model import ModelSource, load_model_source
from .pipeline import DeployOutcome, deploy
from .results import ResultRecord, Status
from .store import ResultsStore, StoredRun
from .targets import Target, load_target

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
