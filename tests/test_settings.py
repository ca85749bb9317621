"""One table of settings: validate, the CLI flags, the Train widgets and error placement derive from
bnviz.config.SETTINGS, and a run's config JSON reproduces it headless."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bnviz.cli import _train_config, build_parser, main
from bnviz.config import SETTINGS, ConfigError, RunConfig, validate, with_settings
from bnviz.presets import preset_config
from tests.conftest import APP_TIMEOUT_S
from tests.test_app import as_shown

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def sample(setting) -> object:
    """A valid value other than the default where the setting allows one."""
    if setting.kind is bool:
        return not setting.default
    if setting.choices:
        return next((c for c in setting.choices if c != setting.default), setting.default)
    candidates = [setting.kind(v) for v in (setting.high, setting.low, setting.default * 2, setting.default / 2, 1) if v is not None]
    return next(v for v in candidates if v != setting.default and setting.problem(v) is None)


def test_every_setting_defaults_to_the_dataclass_and_validates():
    config = RunConfig()
    assert validate(config) is config
    assert {s.name: s.get(config) for s in SETTINGS}["shuffle"] is True
    for setting in SETTINGS:
        value = sample(setting)
        assert setting.get(with_settings(config, **{setting.name: value})) == value


def test_every_dataclass_field_a_user_sets_is_one_setting_of_its_type():
    """The table and the dataclasses cannot drift apart: every BN argument and every scalar field of the
    architecture, the run and the probe has exactly one setting, of the field's own type."""
    import dataclasses
    import typing

    from bnviz.config import ArchConfig, BNConfig, ProbeConfig

    paths = [s.path for s in SETTINGS]
    assert len(paths) == len(set(paths))
    expected = set()
    for prefix, cls in ((("arch", "bn"), BNConfig), (("arch",), ArchConfig), ((), RunConfig), (("probe",), ProbeConfig)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float, str, bool) or (isinstance(hints[f.name], type) and issubclass(hints[f.name], str)):
                expected.add((*prefix, f.name))
    assert expected - {("preset",), ("name",), ("dataset",)} == set(paths)
    for setting in SETTINGS:
        assert isinstance(setting.default, setting.kind), setting.name


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_has_a_cli_flag_that_reaches_the_config(setting):
    value = sample(setting)
    if setting.kind is bool:
        flag = [setting.flag if value else "--no-" + setting.flag[2:]]
    else:
        flag = [setting.flag, str(value)]
    config = _train_config(build_parser().parse_args(["train", *flag]))
    assert setting.get(config) == value and config.preset == "bn"


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.low is not None or s.choices], ids=lambda s: s.name)
def test_out_of_range_values_name_their_setting(setting):
    bad = "nonsense" if setting.choices else (setting.low - 1 if setting.kind is int else math.nan)
    with pytest.raises(ConfigError) as info:
        validate(with_settings(RunConfig(), **{setting.name: bad}))
    assert info.value.field == setting.name and str(info.value).startswith(f"{setting.name} must be")


def test_config_file_reproduces_a_run_and_flags_still_apply(tmp_path):
    original = with_settings(preset_config("final", name="from file"), epsilon=0.01, shuffle=False, moving_variance_initializer="zeros")
    path = tmp_path / "run.json"
    path.write_text(original.to_json())
    assert _train_config(build_parser().parse_args(["train", "--config", str(path)])) == original
    changed = _train_config(build_parser().parse_args(["train", "--config", str(path), "--epochs", "7", "--filters", "8,8"]))
    assert changed.epochs == 7 and [b.filters for b in changed.arch.blocks] == [8, 8] and changed.arch.bn.epsilon == 0.01


@pytest.mark.parametrize(
    "content, message", [(None, "Cannot read the config file"), ("{not json", "is not JSON"), ('{"epochz": 3}', "Unknown configuration field")]
)
def test_bad_config_files_exit_2_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(path), "--home", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_train_page_advanced_bn_reaches_the_queued_config(tmp_path, monkeypatch):
    monkeypatch.setenv("BNVIZ_HOME", str(tmp_path))
    monkeypatch.setattr("bnviz.jobs.JobManager.pump", lambda self: None)  # queue only: no worker in this test
    at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S)
    at.run()
    at.number_input(key="train_epsilon").set_value(0.0).run()
    assert [as_shown(e.value) for e in at.error] == ["epsilon must be > 0. Received: epsilon=0.0"]
    at.number_input(key="train_epsilon").set_value(0.01).run()
    at.selectbox(key="train_moving_variance_initializer").set_value("zeros").run()
    at.checkbox(key="train_shuffle").set_value(False).run()
    at.number_input(key="train_epochs").set_value(200).run()
    at.button(key="train_queue").click().run()
    assert not at.exception and not at.error
    from bnviz.store import Store

    (run,) = Store(tmp_path).list_runs()
    assert (run.config.arch.bn.epsilon, run.config.arch.bn.moving_variance_initializer, run.config.shuffle, run.config.epochs) == (0.01, "zeros", False, 200)
    assert json.loads(run.config.to_json())["shuffle"] is False
    # The page's job thread outlives the test and pumps with the real pump once monkeypatch restores it:
    # a queued run would start a worker training 200 epochs beside the rest of the suite.
    Store(tmp_path).request_cancel(run.id)
