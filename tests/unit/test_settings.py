"""One settings tree: flags > environment > project file > defaults, validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.errors import ConfigError
from closedloop.settings import load_settings


def test_defaults_keep_everything_under_the_project_folder(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, env={})
    assert settings.metadata_url == f"sqlite:///{tmp_path.resolve()}/.closedloop/metadata.db"
    assert settings.artifacts_url == str(tmp_path.resolve() / ".closedloop/artifacts")
    assert settings.predictions_url.endswith(".closedloop/artifacts/predictions")


def test_precedence_is_overrides_then_environment_then_file(tmp_path: Path) -> None:
    (tmp_path / "closedloop.toml").write_text('[server]\nport = 9000\nhost = "127.0.0.2"\n')
    env = {"CLOSEDLOOP_SERVER_PORT": "9100"}
    assert load_settings(tmp_path, env={}).server.port == 9000
    assert load_settings(tmp_path, env=env).server.port == 9100
    flags = {"server": {"port": 9200}}
    settings = load_settings(tmp_path, env=env, overrides=flags)
    assert settings.server.port == 9200
    assert settings.server.host == "127.0.0.2"


def test_the_project_folder_is_found_upwards(tmp_path: Path) -> None:
    (tmp_path / "closedloop.toml").write_text("[pipeline]\nmodel = 'churn'\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    settings = load_settings(nested, env={})
    assert settings.project_dir == tmp_path.resolve()
    assert settings.pipeline.model == "churn"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 'eighty'\n", r"server.port .* must be an integer. Got 'eighty'"),
        ("[server]\nprot = 80\n", r"Unknown setting\(s\) server.prot"),
        ("[servers]\n", r"Unknown section\(s\) \[servers\]"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_a_bad_project_file_names_the_setting_and_what_was_expected(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "closedloop.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, env={})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '[pipeline]\nholdout_fraction = "0.2"',
            r"pipeline.holdout_fraction .* a number. Got '0.2'",
        ),
        ('[server]\nport = "8080"', r"server.port .* an integer. Got '8080'"),
        ("[server]\nport = true", r"server.port .* an integer. Got True"),
        ('[agent]\non_drift = "yes"', r"agent.on_drift .* true or false. Got 'yes'"),
        ("[pipeline]\nmodel = 5", r"pipeline.model .* a string. Got 5"),
        ('[agent]\ncanary_steps = "0.1,1.0"', r"agent.canary_steps .* a list of numbers"),
        ('[agent]\ncanary_steps = [0.1, "1.0"]', r"agent.canary_steps .* a number. Got '1.0'"),
    ],
)
def test_a_project_file_value_of_the_wrong_type_is_refused_not_converted(
    tmp_path: Path, line: str, message: str
) -> None:
    (tmp_path / "closedloop.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, env={})


def test_environment_variables_are_text_parsed_into_their_settings_type(tmp_path: Path) -> None:
    env = {
        "CLOSEDLOOP_PIPELINE_HOLDOUT_FRACTION": "0.3",
        "CLOSEDLOOP_SERVER_PORT": "9100",
        "CLOSEDLOOP_AGENT_ON_DRIFT": "no",
        "CLOSEDLOOP_AGENT_CANARY_STEPS": "0.2, 1.0",
    }
    settings = load_settings(tmp_path, env=env)
    assert settings.pipeline.holdout_fraction == 0.3
    assert settings.server.port == 9100
    assert settings.agent.on_drift is False
    assert settings.agent.canary_steps == (0.2, 1.0)


def test_a_bad_environment_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CLOSEDLOOP_MONITOR_ALPHA"):
        load_settings(tmp_path, env={"CLOSEDLOOP_MONITOR_ALPHA": "high"})


def test_every_setting_is_documented_with_its_environment_variable() -> None:
    from dataclasses import fields

    from closedloop.settings import SECTIONS

    docs = (Path(__file__).parents[2] / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [
        f"{section}.{f.name}"
        for section, cls in SECTIONS.items()
        for f in fields(cls)
        if f"`{f.name}`" not in docs or f"CLOSEDLOOP_{section}_{f.name}".upper() not in docs
    ]
    assert missing == []
