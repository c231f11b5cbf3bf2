"""Options shared by several commands are declared once: same spelling, same help everywhere."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from toolkit.cli.main import main
from toolkit.cli.options import JobOptions, job_options

#: Options that mean the same thing in every command that has them.
SHARED = ("--store", "--target", "--targets", "--targets-dir", "--lab", "--min-runs",
          "--min-seconds")


def every_command() -> dict[str, click.Command]:
    """``"runs export"`` -> its command, for every command and subcommand of ``edge``."""
    found: dict[str, click.Command] = {}
    for name, command in main.commands.items():
        if isinstance(command, click.Group):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def helps(option: str) -> dict[str, str | None]:
    """Command name -> the help text of ``option`` there, for each command that has it."""
    return {name: param.help for name, command in every_command().items()
            for param in command.params
            if isinstance(param, click.Option) and option in param.opts}


def test_every_command_with_store_shows_the_same_help() -> None:
    store = helps("--store")
    assert set(store) == {"deploy", "bench", "check", "report", "runs list", "runs show",
                          "runs diff", "runs tag", "runs export", "runs import", "trend"}
    assert len(set(store.values())) == 1, store


@pytest.mark.parametrize("option", SHARED)
def test_a_shared_option_has_one_help_text(option: str) -> None:
    assert len(set(helps(option).values())) == 1, helps(option)


def test_target_and_targets_are_one_option_wherever_boards_are_named() -> None:
    assert helps("--target").keys() == helps("--targets").keys() == {
        "deploy", "bench", "doctor", "lab status", "check", "trend"}


@pytest.mark.parametrize("spelling", ["--target", "--targets"])
def test_both_spellings_name_boards_repeated_or_comma_separated(spelling: str,
                                                                tmp_path) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text('[boards.a]\nkind = "local"\n[boards.b]\nkind = "local"\n'
                   '[boards.c]\nkind = "local"\n')
    result = CliRunner().invoke(main, ["lab", "status", "--lab", str(lab), spelling, "a,b",
                                       spelling, "c", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "\"target\": \"a\"" in result.stdout and "\"target\": \"c\"" in result.stdout


def test_job_options_passes_what_its_type_names() -> None:
    # deploy and bench take these as **job: Unpack[JobOptions]; a new option must be typed.
    @click.command()
    @job_options
    def command(**job: object) -> None: ...

    assert {param.name for param in command.params} == JobOptions.__required_keys__
