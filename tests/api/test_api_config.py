"""Bad ``BASTION_*`` settings stop the start with the variable's name, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.api.config import SettingError, Settings


@pytest.mark.parametrize(("name", "value", "says"), [
    ("BASTION_HTTP_PORT", "80a", "is not an integer"),
    ("BASTION_READMODEL_CHECKPOINT_SECONDS", "soon", "is not a number"),
    ("BASTION_RATE_KEY", "fast", "is not 'rate/burst'"),
    ("BASTION_RATE_IP", "10/x", "is not 'rate/burst'"),
])
def test_a_setting_that_does_not_parse_names_itself(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingError) as err:
        Settings.from_env({name: value})
    assert str(err.value).startswith(f"{name}={value!r} {says}")


def test_parsed_settings_keep_their_values() -> None:
    s = Settings.from_env({"BASTION_HTTP_PORT": "9001", "BASTION_RATE_KEY": "5/7",
                           "BASTION_GROUP_DELAY": "0.002"})
    assert (s.port, s.key_rate, s.group_delay) == (9001, (5.0, 7.0), 0.002)
    assert Settings.from_env({}).port == Settings().port


def test_bastion_run_refuses_a_bad_setting_before_touching_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "BASTION_DATA": str(data), "BASTION_KEEP_ALIVE": "long",
           "BASTION_DEMO_TRAFFIC": "0"}
    r = subprocess.run([sys.executable, "-c", "from bastion.cli.main import app; app()", "run"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "error: BAD_SETTING: BASTION_KEEP_ALIVE='long' is not a number" in r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert not data.exists(), "the server started"
