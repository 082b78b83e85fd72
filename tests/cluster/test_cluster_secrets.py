"""`cluster up` gives every gateway the same server key and operator token: made once per
cluster directory (0600), unless the environment already names them."""

from __future__ import annotations

import stat
from pathlib import Path

from bastion.cluster.supervisor import shared_secrets


def test_one_server_key_and_operator_token_per_cluster(tmp_path: Path) -> None:
    first: dict[str, str] = {}
    shared_secrets(tmp_path, first)
    again: dict[str, str] = {}
    shared_secrets(tmp_path, again)
    assert first == again
    assert len(bytes.fromhex(first["BASTION_SERVER_KEY"])) == 32
    assert first["BASTION_ADMIN_TOKEN"] != first["BASTION_SERVER_KEY"]
    for name in ("server.key", "admin.token"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    given = {"BASTION_SERVER_KEY": "ab" * 32, "BASTION_ADMIN_TOKEN": "operator-secret"}
    kept = dict(given)
    shared_secrets(tmp_path, kept)
    assert kept == given
