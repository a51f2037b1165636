"""Vault, policy and token flows through the CLI against a running server, on SQLite and PostgreSQL."""

import json

import pytest
from typer.testing import CliRunner

from haven.cli.main import app
from tests.services.haven_server import HavenServer, run_cli as run


@pytest.fixture
def server(tmp_path, db_url):
    srv = HavenServer(tmp_path / "srv", database_url=db_url).start()
    yield srv
    srv.stop()



def test_vault_policy_and_token_flows(server):
    run(server, "subscription", "create", "--name", "prod")
    assert [s["name"] for s in run(server, "subscription", "list")] == ["prod"]
    vault = run(server, "vault", "create", "-s", "prod", "--name", "vault-1", "--region", "local")
    assert vault["storage_redundancy"] == "LRS" and vault["policies"] == 1
    run(server, "vault", "backup-properties", "set", "-s", "prod", "--name", "vault-1", "--backup-storage-redundancy", "LRS")
    default = run(server, "policy", "get-default-for-vm", "-s", "prod", "-v", "vault-1")
    assert default["name"] == "DefaultPolicy" and default["schedule"]["times"] == ["22:30"]
    created = run(server, "policy", "create", "-s", "prod", "-v", "vault-1", "--name", "nightly", "--time", "01:00",
                  "--timezone", "Europe/Berlin", "--daily-days", "14")
    assert created["schedule"]["timezone"] == "Europe/Berlin" and created["retention"]["daily_days"] == 14
    changed = run(server, "policy", "set", "-s", "prod", "-v", "vault-1", "--name", "nightly", "--daily-days", "60")
    assert changed["retention"]["daily_days"] == 60
    assert {p["name"] for p in run(server, "policy", "list", "-s", "prod", "-v", "vault-1")} == {"DefaultPolicy", "nightly"}
    assert run(server, "policy", "list-associated-items", "-s", "prod", "-v", "vault-1", "--name", "nightly") == []
    run(server, "policy", "delete", "-s", "prod", "-v", "vault-1", "--name", "nightly")
    # a Reader token can read but not create
    reader = run(server, "token", "create", "--name", "ci-reader", "--role", "Reader", "--subscription", "prod")["token"]
    assert [v["name"] for v in run(server, "vault", "list", "-s", "prod", token=reader)] == ["vault-1"]
    denied = run(server, "vault", "create", "-s", "prod", "--name", "vault-2", "--region", "local", token=reader, expect=6)
    assert "UserErrorAuthorizationFailed" in denied.output
    run(server, "vault", "delete", "-s", "prod", "--name", "vault-1", "--yes")
    assert run(server, "vault", "list", "-s", "prod") == []


def test_bad_input_answers_with_code_message_fix_and_exit_code(server):
    run(server, "subscription", "create", "--name", "prod")
    bad = run(server, "vault", "create", "-s", "prod", "--name", "1-bad", "--region", "local", expect=2)
    assert "UserErrorVaultNameInvalid" in bad.output and "2 to 50 characters" in bad.output and "Fix" in bad.output
    missing = run(server, "vault", "show", "-s", "prod", "--name", "nope", expect=3)
    assert "UserErrorVaultNotFound" in missing.output
    region = run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "mars", expect=3)
    assert "UserErrorRegionNotFound" in region.output
    assert run(server, "vault", "list", "-s", "prod") == []  # nothing written


def test_unreachable_server_says_how_to_start_it(tmp_path):
    result = CliRunner().invoke(app, ["--server", "http://127.0.0.1:9", "--token", "hvn_x", "vault", "list", "-s", "x"])
    assert result.exit_code == 8 and "haven serve" in result.output


def test_policy_help_states_the_schedule_rule():
    """`policy create --time 08:05` is refused (hour or half hour only, as in Azure): --help says so first."""
    result = CliRunner().invoke(app, ["policy", "create", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "on the hour or the half hour" in " ".join(result.output.split())


def test_output_is_accepted_anywhere(server):
    """`-o json` after the subcommand works as it does before it (issue 23: it worked only in front)."""
    run(server, "subscription", "create", "--name", "prod")
    for args in (["subscription", "list", "-o", "json"], ["subscription", "list", "--output=json"], ["-o", "json", "subscription", "list"]):
        result = CliRunner().invoke(app, ["--server", server.url, "--token", server.token, *args])
        assert result.exit_code == 0, (args, result.output)
        assert [s["name"] for s in json.loads(result.stdout)] == ["prod"], args
    table = CliRunner().invoke(app, ["--server", server.url, "--token", server.token, "subscription", "list"])
    assert table.exit_code == 0 and not table.stdout.lstrip().startswith("[")


@pytest.fixture
def big_vm_server(tmp_path, db_url):
    from tests.restore.conftest import make_vm

    names = [f"vd{chr(ord('a') + i)}" for i in range(18)]  # an OS disk and 17 data disks
    make_vm(tmp_path / "srv" / "vms", "big", {n: 64 << 10 for n in names})
    srv = HavenServer(tmp_path / "srv", database_url=db_url).start()
    yield srv, names
    srv.stop()


def test_excluded_disks_do_not_count_toward_the_16_data_disk_rule_and_the_fixes_run_as_printed(big_vm_server):
    import re
    import shlex

    server, names = big_vm_server
    run(server, "subscription", "create", "--name", "prod")
    run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
    enable = ["protection", "enable-for-vm", "-s", "prod", "-v", "v1", "--vm", "big"]

    refused = run(server, *enable, expect=2)
    assert "UserErrorTooManyDataDisks" in refused.output and "17 data disks" in refused.output
    text = " ".join(refused.output.split())
    listed = re.search(r"'haven (-o json vm list)'", text).group(1)
    assert [d["name"] for d in next(v for v in run(server, *shlex.split(listed)[2:]) if v["name"] == "big")["disks"]] == names
    example = re.search(r"add e\.g\. '([^']+)' to 'haven protection enable-for-vm'", text).group(1)
    assert example == "--exclude-disks vdr"
    assert run(server, "item", "list", "-s", "prod", "-v", "v1") == []  # nothing written

    wrong = run(server, *enable, "--exclude-disks", "vdz", expect=2)
    assert "UserErrorDiskSelectionInvalid" in wrong.output
    assert "haven -o json vm list" in " ".join(wrong.output.split()) and "vm show" not in wrong.output

    item = run(server, *enable, *shlex.split(example))  # 16 data disks remain: accepted
    assert item["exclude_disks"] == ["vdr"] and item["protection_state"] == "Protected"


def test_vault_show_and_list_give_the_vault_state(server):
    run(server, "subscription", "create", "--name", "prod")
    run(server, "vault", "create", "-s", "prod", "--name", "v1", "--region", "local")
    assert run(server, "vault", "show", "-s", "prod", "--name", "v1")["state"] == "Active"
    assert [v["state"] for v in run(server, "vault", "list", "-s", "prod")] == ["Active"]
    table = CliRunner().invoke(app, ["--server", server.url, "--token", server.token, "vault", "list", "-s", "prod"])
    assert table.exit_code == 0 and "state" in table.stdout.lower() and "Active" in table.stdout


def test_host_add_shows_the_adapter_uri(server, tmp_path):
    added = run(server, "host", "add", "--name", "kvm1", "--region", "local", "--adapter", "qemu+ssh://backup@kvm1/system",
                "--token-file", str(tmp_path / "kvm1.token"))
    assert added["adapter"] == "qemu+ssh" and added["adapter_uri"] == "qemu+ssh://backup@kvm1/system"
    table = CliRunner().invoke(app, ["--server", server.url, "--token", server.token, "host", "add", "--name", "kvm2",
                                     "--region", "local", "--adapter", "qemu+tcp://backup:s3cret@kvm2/system",
                                     "--token-file", str(tmp_path / "kvm2.token")])
    assert table.exit_code == 0 and "qemu+tcp://backup:***@kvm2/system" in table.stdout and "s3cret" not in table.stdout
    assert {h["name"]: h["adapter_uri"] for h in run(server, "host", "list")}["kvm1"] == "qemu+ssh://backup@kvm1/system"
