"""The seeds' vault rules: names, redundancy lock, deletion refused while not empty."""

import pytest

from haven.domain.vault import (
    Redundancy,
    RedundancyLocked,
    VaultNameInvalid,
    check_redundancy_change,
    validate_vault_name,
    vault_name_key,
)


@pytest.mark.parametrize("name", ["ab", "a1", "Vault-01", "v" * 50, "a-b-c", "A0-"])
def test_valid_vault_names(name):
    assert validate_vault_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["a", "", "1vault", "-vault", "v" * 51, "vault_1", "vault 1", "vault.1", "väult", "vault/1", "vault\x00", "ｖａｕｌｔ"],
)
def test_invalid_vault_names_name_the_rule_and_the_fix(name):
    with pytest.raises(VaultNameInvalid) as e:
        validate_vault_name(name)
    assert e.value.code == "UserErrorVaultNameInvalid"
    assert "2 to 50 characters" in e.value.text and "starts with a letter" in e.value.text
    assert e.value.fix


def test_names_are_compared_without_case():
    assert vault_name_key("Prod-Vault") == vault_name_key("prod-vault")


def test_redundancy_can_change_until_an_item_is_protected():
    check_redundancy_change("v", Redundancy.GRS, Redundancy.LRS, protected_items=0)
    check_redundancy_change("v", Redundancy.GRS, Redundancy.GRS, protected_items=3)  # no change: fine
    with pytest.raises(RedundancyLocked) as e:
        check_redundancy_change("v", Redundancy.GRS, Redundancy.LRS, protected_items=1)
    assert e.value.http_status == 409 and "already protects 1 item" in e.value.text
