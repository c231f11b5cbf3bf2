"""Options several ``edge`` commands share, each declared once: one spelling, one help text.

``--store`` used to be declared four times with three help texts, and boards were
``--target`` to ``edge deploy`` but ``--targets`` to ``edge bench``. Each command now
takes these decorators; ``--target`` and ``--targets`` are two spellings of one option
everywhere, repeated or comma-separated. ``tests/test_cli_options.py`` holds every
command to the same help text.

Example::

    @click.command()
    @targets_option(required=True)
    @store_option
    def bench(targets: tuple[str, ...], store_path: str | None) -> None: ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack

import click

from device_agent.power import POWER_SENSORS
from device_agent.protocol import ACCELERATORS, APIS, JobSettings
from toolkit.compress import RUNTIMES, parse_runtimes
from toolkit.defaults import DEFAULT_BUSY_WAIT_SECONDS, DEFAULT_OUT_DIR
from toolkit.errors import UsageError
from toolkit.model.project import STORE_ENV

F = TypeVar("F", bound=Callable[..., Any])
#: The job settings' defaults, shown in help texts (they live in JobSettings only).
_JOB = JobSettings()
#: Where ``edge deploy`` and ``edge bench`` keep converted variants, instead of
#: ~/.cache/edge/conversions.
CONVERSION_CACHE_ENV = "EDGE_CONVERSION_CACHE"

store_option = click.option(
    "--store", "store_path", metavar="FILE|URL",
    help=f"Results store: a SQLite file or a postgresql:// URL [default: ${STORE_ENV}, else "
         "[tool.edge] store in pyproject.toml, else results.sqlite in the output folder "
         f"(deploy and bench: -o OUT; other commands: {DEFAULT_OUT_DIR}/)].")

lab_option = click.option(
    "--lab", "lab_file", type=click.Path(path_type=Path),
    help="Lab file listing boards and their tags [default: $EDGE_LAB, else ./lab.toml].")

targets_dir_option = click.option(
    "--targets-dir", type=click.Path(path_type=Path),
    help="Folder of your own target files, searched before the built-in ones "
         "[default: $EDGE_TARGETS_DIR].")

out_dir_option = click.option(
    "-o", "--out", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT_DIR,
    show_default=True, help="Folder for runs (artifacts and reports) and the default store.")

min_runs_option = click.option(
    "--min-runs", type=click.IntRange(min=1),
    help=f"Measured runs at least [default: {_JOB.min_runs}].")

min_seconds_option = click.option(
    "--min-seconds", type=click.FloatRange(min=0),
    help=f"Measured seconds at least [default: {_JOB.min_seconds:g}].")

profile_option = click.option(
    "--profile", is_flag=True,
    help="Also profile each variant operator by operator on the board, in a pass of its own "
         "(whole-model latency still comes from the unprofiled runs); shown in the report.")

output_file_option = click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file (whole, or not at all) instead of standard output.")

#: ``--target`` and ``--targets``: the help text every command shows.
TARGETS_HELP = ("Boards: target file names, boards of the lab file, or tag:NAME (every board "
                "with that tag); comma-separated or repeated. bench, deploy and doctor also "
                "take tag:board=KIND, a board the labgrid coordinator allots per job.")


class _TargetsSettings(TypedDict, total=False):
    """What differs between commands' ``--target`` (click.option's own keywords)."""

    default: tuple[str, ...]
    show_default: bool
    required: bool


def targets_option(**settings: Unpack[_TargetsSettings]) -> Callable[[F], F]:
    """``--target``/``--targets`` into the parameter ``targets`` (a tuple of specs).

    ``settings`` are what differs between commands: a ``default`` or ``required``.
    """
    return click.option("--target", "--targets", "targets", multiple=True, metavar="BOARDS",
                        help=TARGETS_HELP, **settings)

coordinator_option = click.option(
    "--coordinator", metavar="HOST:PORT", envvar="LG_COORDINATOR",
    help="labgrid coordinator that allots boards to selectors such as tag:board=rpi4 (a "
         "place tag; the tag value names the board kind's target file) [default: "
         "$LG_COORDINATOR, else coordinator in the lab file].")

priority_option = click.option(
    "--priority", type=int, default=0, show_default=True,
    help="Priority of this command's reservations on the labgrid coordinator: higher "
         "first, equal ones by age.")


def _accelerator_list(_ctx: click.Context, _param: click.Parameter,
                      value: str | None) -> list[str] | None:
    """``"cpu,gpu"`` -> ["cpu", "gpu"]; an unknown name is a usage error naming the option."""
    if value is None:
        return None
    kinds = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [kind for kind in kinds if kind not in ACCELERATORS]
    if not kinds or unknown or len(set(kinds)) != len(kinds):
        raise click.BadParameter(f"{value!r}: give distinct accelerators from "
                                 f"{', '.join(ACCELERATORS)}, e.g. cpu,gpu",
                                 param_hint="--accelerator")
    return kinds


accelerator_option = click.option(
    "--accelerator", "accelerators", callback=_accelerator_list, metavar="LIST",
    help="Accelerators to sweep, e.g. cpu,gpu: " + ", ".join(ACCELERATORS)
         + " (delegate: the target's delegate library) [default: the target's setting].")

api_option = click.option(
    "--api", type=click.Choice(APIS),
    help="The API the app will use: the Interpreter or LiteRT's CompiledModel (gpu always "
         "uses CompiledModel) [default: the target's setting, else interpreter].")


def _thread_counts(_ctx: click.Context, _param: click.Parameter,
                   value: str | None) -> list[int] | None:
    """``"1,2,4"`` -> [1, 2, 4]; a bad list is a usage error naming the option."""
    if value is None:
        return None
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of whole numbers",
                                 param_hint="--threads") from None
    if not counts or any(count < 0 for count in counts) or len(set(counts)) != len(counts):
        raise click.BadParameter(f"{value!r}: give distinct thread counts >= 0, e.g. 1,2,4",
                                 param_hint="--threads")
    return counts


def _runtime_list(_ctx: click.Context, _param: click.Parameter,
                  value: str | None) -> tuple[str, ...]:
    """``"tflite,onnxruntime"`` -> the runtimes; a bad list is a usage error naming the
    option; none given: () (each model's own)."""
    if value is None:
        return ()
    try:
        return parse_runtimes(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc).removeprefix(f"--runtime {value!r}: "),
                                 param_hint="--runtime") from None


runtime_option = click.option(
    "--runtime", "runtimes", callback=_runtime_list, metavar="LIST",
    help="Runtimes to build a .py model file's variants for, measured side by side: "
         f"{', '.join(RUNTIMES)} (an .onnx exported by torch.onnx; its variants are "
         "named VARIANT-ort and built by onnxruntime.quantization: fp32, fp16, int8-dynamic, "
         "int8 static QDQ) [default: tflite].")

threads_option = click.option(
    "--threads", "threads", callback=_thread_counts, metavar="LIST",
    help="Thread counts to sweep, e.g. 1,2,4 [default: the target's setting].")

cooldown_option = click.option(
    "--cooldown", type=click.FloatRange(min=0),
    help=f"Seconds to pause between variants on the board [default: "
         f"{_JOB.cooldown_seconds:g}].")

cooldown_to_option = click.option(
    "--cooldown-to", type=click.FloatRange(min=1),
    help="Before each variant, wait until the board's hottest zone is this cool (C).")

power_sensor_option = click.option(
    "--power-sensor", type=click.Choice(POWER_SENSORS),
    help=f"Power sensor on the board (auto: detect one) [default: the target's power_sensor, "
         f"else {_JOB.power_sensor}].")

power_command_option = click.option(
    "--power-command",
    help="Command on the board that prints watts (an external meter); implies "
         "--power-sensor command.")

busy_wait_option = click.option(
    "--busy-wait", type=click.FloatRange(min=0), default=DEFAULT_BUSY_WAIT_SECONDS,
    show_default=True,
    help="Seconds to wait for a board another job holds, saying who holds it (0: fail at "
         "once, before compressing).")

conversion_cache_option = click.option(
    "--conversion-cache", type=click.Path(path_type=Path), envvar=CONVERSION_CACHE_ENV,
    default=Path("~/.cache/edge/conversions"), show_default=True, show_envvar=True,
    help="Folder of converted variants: an unchanged model and recipe is not "
         "converted again (least recently used evicted above 2 GiB).")


class JobOptions(TypedDict):
    """What :func:`job_options` passes a command, by parameter name (None: not given)."""

    min_runs: int | None
    min_seconds: float | None
    profile: bool
    threads: list[int] | None
    accelerators: list[str] | None
    api: str | None
    cooldown: float | None
    cooldown_to: float | None
    power_sensor: str | None
    power_command: str | None


def job_options(function: F) -> F:
    """The job-setting options ``edge deploy`` and ``edge bench`` share, in one decorator:
    ``--min-runs``, ``--min-seconds``, ``--profile``, ``--threads``, ``--accelerator``,
    ``--api``, ``--cooldown``, ``--cooldown-to``, ``--power-sensor``, ``--power-command``."""
    for option in reversed((min_runs_option, min_seconds_option, profile_option,
                            threads_option, accelerator_option, api_option, cooldown_option,
                            cooldown_to_option, power_sensor_option, power_command_option)):
        function = option(function)
    return function


def job_settings(options: JobOptions) -> dict[str, str | float]:
    """The job settings (``JobSettings`` names) that :func:`job_options` were given."""
    named = {"min_runs": options["min_runs"], "min_seconds": options["min_seconds"],
             "cooldown_seconds": options["cooldown"], "cooldown_to_c": options["cooldown_to"],
             "power_sensor": options["power_sensor"], "power_command": options["power_command"],
             "api": options["api"], "profile": 1 if options["profile"] else None}
    return {key: value for key, value in named.items() if value is not None}
