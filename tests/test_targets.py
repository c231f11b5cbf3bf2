"""Target files: the built-in boards, validation, and ~/.ssh/config through paramiko."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit.boards.targets import available_targets, check_name, load_target, resolve_ssh
from toolkit.cli.main import main
from toolkit.errors import TargetError

BOARDS = ("rpi4", "rpi5", "jetson-nano", "jetson-orin-nano")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("name", BOARDS)
def test_builtin_boards_load_as_ssh_targets(name: str) -> None:
    target = load_target(name)
    assert target.transport == "ssh" and target.host and target.threads >= 1
    assert target.python and target.work_dir and target.thermal_zones
    assert target.cache_max_mb == 512  # written out in each file, as documented
    assert target.to_dict()["name"] == name


def test_local_target_is_kept() -> None:
    assert load_target("local").transport == "local"
    assert set(BOARDS) | {"local"} <= set(available_targets())


def test_ssh_config_alias_fills_what_the_target_file_leaves_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host lab-pi\n  HostName 127.0.0.9\n  Port 2201\n  User alice\n"
                      f"  IdentityFile {tmp_path}/id_lab\n"
                      f"  UserKnownHostsFile {tmp_path}/kh\n")
    monkeypatch.setenv("EDGE_SSH_CONFIG", str(config))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "pi.toml").write_text('transport = "ssh"\nhost = "lab-pi"\n')
    params = resolve_ssh(load_target("pi", tmp_path / "t"))
    assert (params.hostname, params.port, params.user) == ("127.0.0.9", 2201, "alice")
    assert params.key_filenames == (f"{tmp_path}/id_lab",)
    assert params.known_hosts == tmp_path / "kh"
    assert params.host_key_name == "[127.0.0.9]:2201"
    (tmp_path / "t" / "pi.toml").write_text('transport = "ssh"\nhost = "lab-pi"\nuser = "bob"\n'
                                            "port = 22\n")
    params = resolve_ssh(load_target("pi", tmp_path / "t"))
    assert (params.user, params.port, params.host_key_name) == ("bob", 22, "127.0.0.9")


def test_users_own_ssh_config_is_not_read_in_tests() -> None:
    params = resolve_ssh(load_target("rpi4"))
    assert params.hostname == "rpi4" and params.port == 22


@pytest.mark.parametrize("body, message", [
    ('transport = "ssh"\n', "needs a host"),
    ('transport = "ssh"\nhost = "x"\nruntime = "tensorflow"\n', "runtime"),
    ('transport = "ssh"\nhost = "x"\nport = 70000\n', "port"),
    ('transport = "ssh"\nhost = "x"\npower_sensor = "magic"\n', "power_sensor"),
    ('transport = "ssh"\nhost = "x"\nthreads = -1\n', "threads"),
    ('transport = "ssh"\nhost = "x"\nconnect_timeout = 0\n', "connect_timeout"),
    ('transport = "ssh"\nhost = "x"\nthermal_zones = [1]\n', "thermal_zones"),
    ('transport = "ssh"\nhost = "x"\nset_governor = "fast; reboot"\n', "set_governor"),
    ('transport = "ssh"\nhost = "x"\nset_governor = 1\n', "set_governor"),
    ('transport = "ssh"\nhost = "x"\nwork_dir = ""\n', "work_dir"),
    ('transport = "ssh"\nhost = "x"\ncache_max_mb = -1\n', "cache_max_mb"),
    ('transport = "ssh"\nhost = "x"\ncache_max_mb = 0.5\n', "cache_max_mb"),
    ('transport = "ssh"\nhost = "x"\ncolour = "red"\n', "unknown key"),
    ('transport = "ssh"\nhost = "x"\nssh_agent = "yes"\n', "ssh_agent"),
    ('transport = "ssh"\nhost = "x"\njump = ""\n', "jump"),
])
def test_bad_target_files_name_what_to_fix(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "bad.toml").write_text(body)
    with pytest.raises(TargetError, match=message):
        load_target("bad", tmp_path)


@pytest.mark.parametrize("name", ["; rm -rf ~", "$(touch x)", "../etc", "a\nb", "..", "", "a/b",
                                  "x."])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(TargetError):
        check_name(name)
    with pytest.raises(TargetError):
        load_target(name)


def test_targets_list_and_show() -> None:
    listed = invoke("targets", "list")
    assert listed.exit_code == 0
    for name in (*BOARDS, "local"):
        assert name in listed.stdout
    shown = invoke("targets", "show", "jetson-orin-nano")
    assert shown.exit_code == 0
    assert '"power_sensor": "ina3221-hwmon"' in shown.stdout
    assert '"resolved_ssh"' in shown.stdout
    missing = CliRunner().invoke(main, ["targets", "show", "nope"])
    assert missing.exit_code == 2 and "unknown target 'nope'" in missing.stderr


def test_every_builtin_target_names_a_power_sensor_the_agent_knows() -> None:
    from device_agent.power import POWER_SENSORS
    from toolkit.run.plan import job_settings

    for name in available_targets():
        target = load_target(name)
        zones = ",".join(target.thermal_zones)
        assert target.power_sensor in POWER_SENSORS, name
        own = job_settings(target, {})
        assert (own.power_sensor, own.thermal_zones) == (target.power_sensor, zones)
        # A sensor or meter chosen on the command line wins; the zones still come along.
        metered = job_settings(target, {"power_command": "meter"})
        assert (metered.power_sensor, metered.power_command, metered.thermal_zones) == (
            "command", "meter", zones)
        named = job_settings(target, {"power_sensor": "rapl"})
        assert (named.power_sensor, named.thermal_zones) == ("rapl", zones)


def test_a_jump_list_resolves_each_hop_through_the_ssh_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host gw\n  HostName 127.0.0.7\n  User gate\n"
                      f"  IdentityFile {tmp_path}/id_gw\n")
    monkeypatch.setenv("EDGE_SSH_CONFIG", str(config))
    (tmp_path / "pi.toml").write_text('transport = "ssh"\nhost = "10.0.0.5"\nuser = "pi"\n'
                                      f'identity = "{tmp_path}/id_pi"\n'
                                      'jump = "gw, ops@[::1]:2022"\n')
    params = resolve_ssh(load_target("pi", tmp_path))
    assert [hop.address for hop in params.jumps] == ["gate@127.0.0.7:22", "ops@::1:2022"]
    assert params.jumps[0].key_filenames == (f"{tmp_path}/id_gw",)
    assert params.jumps[1].key_filenames == (f"{tmp_path}/id_pi",)  # the board's identity
    assert [len(hop.jumps) for hop in params.hops()] == [0, 1, 2]
    (tmp_path / "pi.toml").write_text('transport = "ssh"\nhost = "x"\njump = "a b"\n')
    with pytest.raises(TargetError, match="jump host 'a b' is not"):
        resolve_ssh(load_target("pi", tmp_path))


def test_a_targets_set_governor_travels_in_its_jobs(tmp_path: Path) -> None:
    from toolkit.run.plan import job_settings

    (tmp_path / "pinned.toml").write_text(
        'transport = "ssh"\nhost = "x"\nset_governor = "performance"\n')
    assert job_settings(load_target("pinned", tmp_path), {}).set_governor == "performance"
    assert job_settings(load_target("rpi4"), {}).set_governor == ""  # opt-in
