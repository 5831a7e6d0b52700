"""Settings: sources and their priority, fink-client credentials, masking, error messages."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
import yaml

from service.cli import main
from service.config import (
    ConfigError,
    Settings,
    kafka_consumer_config,
    load_settings,
    read_fink_credentials,
    reference_table,
)
from service.kafka.source import consumer_config

SECRETS = {
    "kafka_password": "kafka-pw-4711",
    "lasair_token": "lasair-token-0815",
    "redis_url": "redis://:redis-pw-1234@redis.example:6379/0",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No FINKVRA_* variable of the machine leaks in; no real credentials file is read."""
    for name in list(os.environ):
        if name.upper().startswith("FINKVRA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FINKVRA_FINK_CREDENTIALS", str(tmp_path / "absent.yml"))
    monkeypatch.chdir(tmp_path)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- sources


def test_defaults():
    settings = load_settings()
    assert settings.data_dir == Path("finkvra-data")
    assert settings.kafka_bootstrap is None
    assert settings.kafka_topics == ["fink_vra_ztf"] and settings.kafka_topic is None
    assert (settings.batch_size, settings.batch_timeout_s) == (500, 5.0)
    assert settings.models == ["gal", "real"]
    assert (settings.strategy, settings.learner) == ("adaptive", "hgb")
    assert (settings.discover_eyeball, settings.discover_garbage) == (7.0, 1.5)
    assert (settings.initial_labels, settings.retrain_step) == (30, 10)
    assert (settings.queue_max_size, settings.lease_seconds, settings.http_port) == (
        10000,
        600,
        8080,
    )
    assert settings.queue_budget == 1.0 and settings.holdout_fraction == 0.2
    assert settings.redis_url is None and settings.mlflow_uri is None


def test_priority_constructor_over_env_over_toml_over_defaults(tmp_path, monkeypatch):
    config = write_toml(
        tmp_path / "finkvra.toml",
        'batch_size = 7\nstrategy = "margin"\nqueue_prefix = "from-toml"\nseed = 3\n',
    )
    monkeypatch.setenv("FINKVRA_BATCH_SIZE", "9")
    monkeypatch.setenv("FINKVRA_QUEUE_PREFIX", "from-env")
    settings = load_settings(config, queue_prefix="from-kwargs")
    assert settings.queue_prefix == "from-kwargs"  # constructor > env > TOML
    assert settings.batch_size == 9  # env > TOML
    assert settings.strategy == "margin" and settings.seed == 3  # TOML > default
    assert settings.retrain_step == 10  # default


def test_config_file_from_environment(tmp_path, monkeypatch):
    config = write_toml(tmp_path / "c.toml", 'learner = "river-arf"\n')
    monkeypatch.setenv("FINKVRA_CONFIG", str(config))
    assert load_settings().learner == "river-arf"


def test_settings_constructor_reads_env(monkeypatch):
    monkeypatch.setenv("finkvra_retrain_step", "4")  # case-insensitive, like pydantic-settings
    assert Settings().retrain_step == 4
    assert Settings(retrain_step=6).retrain_step == 6


def test_lists_and_tables_from_env_and_toml(tmp_path, monkeypatch):
    monkeypatch.setenv("FINKVRA_MODELS", "real")
    monkeypatch.setenv("FINKVRA_KAFKA_EXTRA", '{"fetch.min.bytes": 2, "client.id": "x"}')
    settings = load_settings()
    assert settings.models == ["real"]
    assert settings.kafka_extra == {"fetch.min.bytes": 2, "client.id": "x"}
    monkeypatch.setenv("FINKVRA_MODELS", '["real", "gal", "real"]')
    assert load_settings().models == ["real", "gal"]
    monkeypatch.delenv("FINKVRA_MODELS")
    config = write_toml(
        tmp_path / "c.toml", 'models = ["gal"]\n[kafka_extra]\n"session.timeout.ms" = 6000\n'
    )
    monkeypatch.delenv("FINKVRA_KAFKA_EXTRA")
    settings = load_settings(config)
    assert settings.models == ["gal"]
    assert settings.kafka_extra == {"session.timeout.ms": 6000}


def test_empty_env_means_unset(monkeypatch):
    monkeypatch.setenv("FINKVRA_REDIS_URL", "")
    monkeypatch.setenv("FINKVRA_SEED", "")
    settings = load_settings()
    assert settings.redis_url is None and settings.seed is None


def test_derived_places(tmp_path):
    settings = load_settings(data_dir=tmp_path / "d")
    assert settings.archive_dir == tmp_path / "d" / "archive"
    assert settings.labels_dir == tmp_path / "d" / "labels"
    assert settings.deadletter_dir == tmp_path / "d" / "deadletter"
    assert settings.mlflow_tracking_uri == f"sqlite:///{(tmp_path / 'd').resolve()}/mlflow.db"
    assert settings.mlflow_tracking_uri.startswith("sqlite:////")  # absolute path
    relative = load_settings(data_dir="rel")
    assert relative.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve()}/rel/mlflow.db"
    assert (
        load_settings(mlflow_uri="http://mlflow:5000").mlflow_tracking_uri == "http://mlflow:5000"
    )


# --------------------------------------------------------------------------- credentials


def fink_credentials(**changes) -> dict:
    """A credentials dict as `finkctl auth register` builds it (finkctl_register.py)."""
    conf = {
        "survey": "ztf",
        "username": "alice",
        "password": "fink-pw-99",
        "groupid": "alice_vra",
        "servers": "kafka-ztf.fink-broker.org:24499",
        "maxtimeout": 10,
        "topics": {"fink_early_sn_candidates_ztf": {}, "fink_vra_ztf": {}},
    }
    conf.update(changes)
    return conf


def test_credentials_file_written_by_fink_client(tmp_path, monkeypatch):
    from fink_client import configuration

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(configuration, "_ROOTDIR", str(home / ".finkclient"))
    configuration.write_credentials(fink_credentials())  # fink-client's own writer
    monkeypatch.delenv("FINKVRA_FINK_CREDENTIALS")  # so the default path is used
    settings = load_settings()
    assert settings.fink_credentials == home / ".finkclient" / "ztf_credentials.yml"
    assert settings.kafka_bootstrap == "kafka-ztf.fink-broker.org:24499"
    assert settings.kafka_group_id == "alice_vra"
    assert settings.kafka_username == "alice"
    assert settings.kafka_password.get_secret_value() == "fink-pw-99"
    # every subscribed topic, consumed at once
    assert settings.kafka_topics == ["fink_early_sn_candidates_ztf", "fink_vra_ztf"]
    config = kafka_consumer_config(settings)
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("alice", "fink-pw-99")


def test_credentials_fill_only_what_is_not_set(tmp_path, monkeypatch):
    path = tmp_path / "creds.yml"
    path.write_text(yaml.safe_dump(fink_credentials(password=None, topics={"t_one": {}})))
    monkeypatch.setenv("FINKVRA_FINK_CREDENTIALS", str(path))
    monkeypatch.setenv("FINKVRA_KAFKA_GROUP_ID", "env_group")
    settings = load_settings()
    assert settings.kafka_group_id == "env_group"  # env wins over the file
    assert settings.kafka_bootstrap == "kafka-ztf.fink-broker.org:24499"
    assert settings.kafka_password is None  # fink-client's usual null password
    assert settings.kafka_topics == ["t_one"]
    assert "security.protocol" not in kafka_consumer_config(settings)  # no password, no SASL


def test_credentials_ignored_when_a_server_is_set(tmp_path, monkeypatch):
    path = tmp_path / "creds.yml"
    path.write_text(yaml.safe_dump(fink_credentials()))
    monkeypatch.setenv("FINKVRA_FINK_CREDENTIALS", str(path))
    config = write_toml(tmp_path / "c.toml", 'kafka_bootstrap = "127.0.0.1:9092"\n')
    settings = load_settings(config)
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.kafka_group_id == "finkvra" and settings.kafka_username is None
    assert load_settings(fink_credentials="").kafka_bootstrap is None  # disabled


def test_old_credentials_format_with_mytopics(tmp_path):
    path = tmp_path / "old.yml"
    path.write_text("username: bob\ngroup_id: bob_g\nservers: host:1\nmytopics: [a_topic]\n")
    assert read_fink_credentials(path) == {
        "kafka_bootstrap": "host:1",
        "kafka_group_id": "bob_g",
        "kafka_username": "bob",
        "kafka_topics": ["a_topic"],
    }


def test_unreadable_credentials_file_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("servers: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yml.*FINKVRA_FINK_CREDENTIALS"):
        load_settings(fink_credentials=path)


# --------------------------------------------------------------------------- Kafka


def test_kafka_consumer_config():
    settings = load_settings(
        kafka_bootstrap="b:1",
        kafka_group_id="g",
        kafka_username="u",
        kafka_extra={"fetch.min.bytes": 5, "auto.offset.reset": "latest"},
    )
    config = kafka_consumer_config(settings)
    assert config == {
        "bootstrap.servers": "b:1",
        "group.id": "g",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,  # issue 9: one function, the source's own options
        "auto.offset.reset": "latest",  # kafka_extra wins
        "fetch.min.bytes": 5,
    }  # a user name without a password: no SASL
    assert config == consumer_config("b:1", "g", extra=settings.kafka_extra)
    assert kafka_consumer_config(settings, bootstrap="mock:2")["bootstrap.servers"] == "mock:2"
    with pytest.raises(ConfigError, match="FINKVRA_KAFKA_BOOTSTRAP"):
        kafka_consumer_config(load_settings())


# --------------------------------------------------------------------------- secrets


def secret_settings(**extra) -> Settings:
    return load_settings(
        context_provider="lasair",
        kafka_extra={"sasl.password": "extra-pw-5555", "client.id": "visible"},
        mlflow_uri="http://user:mlflow-pw-77@mlflow:5000",
        **SECRETS,
        **extra,
    )


ALL_SECRETS = [*SECRETS.values(), "redis-pw-1234", "extra-pw-5555", "mlflow-pw-77"]


def test_secrets_masked_in_show_repr_and_dict():
    settings = secret_settings()
    assert settings.lasair_token.get_secret_value() == SECRETS["lasair_token"]
    for text in (
        settings.show("toml"),
        settings.show("json"),
        repr(settings),
        str(settings),
        json.dumps(settings.masked_dict()),
    ):
        for secret in ALL_SECRETS:
            assert secret not in text
        assert "***" in text
    shown = settings.masked_dict()
    assert shown["kafka_password"] == "***" and shown["lasair_token"] == "***"
    assert shown["redis_url"] == "redis://:***@redis.example:6379/0"  # host still visible
    assert shown["mlflow_uri"] == "http://user:***@mlflow:5000"
    assert shown["kafka_extra"] == {"sasl.password": "***", "client.id": "visible"}


def test_secrets_masked_in_config_errors(monkeypatch):
    monkeypatch.setenv("FINKVRA_REDIS_URL", "http://:redis-pw-1234@host:1")
    with pytest.raises(ConfigError) as caught:
        load_settings(kafka_password=["kafka-pw-4711"])  # not a string: invalid
    message = str(caught.value)
    assert "redis-pw-1234" not in message and "kafka-pw-4711" not in message
    assert "FINKVRA_REDIS_URL='http://:***@host:1'" in message
    assert "kafka_password='***'" in message
    with pytest.raises(ValueError) as raw:  # a raw pydantic error hides inputs too
        Settings(redis_url="http://:redis-pw-1234@host:1")
    assert "redis-pw-1234" not in str(raw.value)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("env", "kwargs", "expected"),
    [
        (
            {"FINKVRA_STRATEGY": "uncertainy"},
            {},
            [
                "FINKVRA_STRATEGY='uncertainy' is not a strategy: use one of random, uncertainty,",
                "did you mean 'uncertainty'",
            ],
        ),
        (
            {},
            {"redis_url": "http://host:6379"},
            ["redis_url='http://host:6379'", "scheme 'http'", "redis://", "rediss://", "unix://"],
        ),
        (
            {"FINKVRA_BATCH_SIZE": "-5"},
            {},
            ["FINKVRA_BATCH_SIZE='-5' must be greater than 0", "default 500"],
        ),
        (
            {},
            {"models": ["gal", "rael"]},
            ["models=['gal', 'rael']", "'rael'", "use one or more of gal, real"],
        ),
        ({"FINKVRA_MODELS": ""}, {}, ["FINKVRA_MODELS='' is empty", "at least one model"]),
        ({}, {"learner": "svm"}, ["learner='svm' is not a learner: use one of hgb, river-arf"]),
        ({}, {"queue_budget": 0}, ["queue_budget=0 must be greater than 0"]),
        ({}, {"holdout_fraction": 0.8}, ["holdout_fraction=0.8 must be at most 0.5"]),
        ({}, {"http_port": "eighty"}, ["http_port='eighty' must be a whole number"]),
        ({}, {"queue_prefix": "a b"}, ["queue_prefix='a b' must be", "letters, digits"]),
        ({}, {"log_level": "loud"}, ["log_level='loud' is not a log level: use one of DEBUG,"]),
        ({}, {"context_provider": "lasair"}, ["needs a token", "FINKVRA_LASAIR_TOKEN"]),
        ({"FINKVRA_KAFKA_EXTRA": "{not json"}, {}, ["FINKVRA_KAFKA_EXTRA='***' is not valid JSON"]),
        ({}, {"stratgy": "margin"}, ["unknown setting 'stratgy'", "did you mean 'strategy'"]),
    ],
)
def test_errors_name_setting_value_and_fix(monkeypatch, env, kwargs, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)
    for text in expected:
        assert text in str(caught.value)


def test_every_bad_setting_reported_once(monkeypatch):
    monkeypatch.setenv("FINKVRA_STRATEGY", "nope")
    with pytest.raises(ConfigError) as caught:
        load_settings(batch_size=0, learner="x")
    problems = caught.value.problems
    assert len(problems) == 3
    assert [p.split("=")[0] for p in problems] == ["batch_size", "learner", "FINKVRA_STRATEGY"]


def test_toml_errors_name_file_and_line(tmp_path):
    config = write_toml(tmp_path / "c.toml", 'batch_size = 10\nstrategy = "bogus"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert f"strategy='bogus' (in {config} line 2) is not a strategy" in str(caught.value)

    bad = write_toml(tmp_path / "bad.toml", "batch_size = 10\nstrategy = margin\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(bad)
    assert str(bad) in str(caught.value) and "line 2" in str(caught.value)
    assert "not valid TOML" in str(caught.value)

    typo = write_toml(tmp_path / "typo.toml", "\nbatch_sise = 10\n")
    with pytest.raises(
        ConfigError, match=r"unknown setting 'batch_sise' \(in .*typo.toml line 2\)"
    ):
        load_settings(typo)

    with pytest.raises(ConfigError, match="missing.toml: config file not found"):
        load_settings(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- show / CLI


def test_show_is_loadable_toml(tmp_path):
    settings = load_settings(
        data_dir=tmp_path / "d",
        kafka_bootstrap="b:1",
        models=["real"],
        kafka_extra={"fetch.min.bytes": 3, "enable.partition.eof": True},
        holdout_fraction=0.25,
        seed=11,
    )
    text = settings.show()
    assert tomllib.loads(text) == {k: v for k, v in settings.masked_dict().items() if v is not None}
    again = load_settings(write_toml(tmp_path / "shown.toml", text))
    assert again.masked_dict() == settings.masked_dict()


def test_cli_config_show(tmp_path, capsys):
    config = write_toml(
        tmp_path / "c.toml", 'strategy = "margin"\nlasair_token = "lasair-token-0815"\n'
    )
    assert main(["config", "show", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert 'strategy = "margin"' in out
    assert 'lasair_token = "***"' in out and "lasair-token-0815" not in out
    assert tomllib.loads(out)["strategy"] == "margin"

    assert main(["config", "show", "--format", "json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"] == "margin"

    assert main(["config"]) == 0  # show is the default action
    assert 'strategy = "adaptive"' in capsys.readouterr().out


def test_cli_config_show_exits_2_on_bad_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FINKVRA_STRATEGY", "uncertainy")
    assert main(["config", "show"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "FINKVRA_STRATEGY='uncertainy' is not a strategy" in captured.err
    monkeypatch.delenv("FINKVRA_STRATEGY")
    assert main(["config", "show", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_reference_lists_every_setting(capsys):
    assert main(["config", "reference"]) == 0
    out = capsys.readouterr().out
    assert out == reference_table()
    for name in Settings.model_fields:
        assert f"| `{name}` | `FINKVRA_{name.upper()}` |" in out


def test_a_mistyped_environment_variable_is_named_with_the_nearest_real_one(
    monkeypatch, tmp_path, capsys
):
    from service.cli import main
    from service.config import unknown_environment

    environ = {"FINKVRA_BATCHSIZE": "3", "FINKVRA_DATA_DIR": "/x", "FINKVRA_CONFIG": "", "PATH": ""}
    (warning,) = unknown_environment(environ)
    assert warning.startswith(
        "FINKVRA_BATCHSIZE names no setting (did you mean 'FINKVRA_BATCH_SIZE'?)"
    )
    assert unknown_environment({"FINKVRA_REDIS_URL": "redis://x"}) == []
    for key in [k for k in os.environ if k.startswith("FINKVRA_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FINKVRA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FINKVRA_FINK_CREDENTIALS", "")
    monkeypatch.setenv("FINKVRA_STRATGY", "margin")
    assert main(["config", "show"]) == 0  # a warning, not a stop
    err = capsys.readouterr().err
    assert "FINKVRA_STRATGY names no setting (did you mean 'FINKVRA_STRATEGY'?)" in err


# --------------------------------------------------------------------------- surveys


def test_ztf_keeps_every_name_and_place_lsst_gets_its_own():
    ztf = load_settings(data_dir="/srv/d", queue_prefix="vra")
    lsst = load_settings(data_dir="/srv/d", queue_prefix="vra", survey="lsst")
    assert (ztf.redis_prefix, ztf.mlflow_model_prefix) == ("vra", "finkvra")
    assert (ztf.archive_dir, ztf.labels_dir, ztf.deadletter_dir, ztf.publishing_dir) == (
        Path("/srv/d/archive"), Path("/srv/d/labels"), Path("/srv/d/deadletter"),
        Path("/srv/d/publishing"),
    )  # fmt: skip
    assert (lsst.redis_prefix, lsst.mlflow_model_prefix) == ("vra-lsst", "finkvra-lsst")
    assert (lsst.archive_dir, lsst.labels_dir, lsst.deadletter_dir, lsst.publishing_dir) == (
        Path("/srv/d/lsst/archive"), Path("/srv/d/lsst/labels"), Path("/srv/d/lsst/deadletter"),
        Path("/srv/d/lsst/publishing"),
    )  # fmt: skip
    assert lsst.mlflow_tracking_uri == ztf.mlflow_tracking_uri  # one MLflow serves both
    from service.wiring import tracker

    assert tracker(lsst).experiment_name("gal") == "finkvra-lsst-gal"
    assert tracker(ztf).registered_model_name("gal") == "finkvra-gal"


def test_survey_defaults_topics_context_and_lasair():
    ztf, lsst = load_settings(), load_settings(survey="LSST")
    assert ztf.kafka_topics == ["fink_vra_ztf"]
    assert lsst.survey == "lsst" and lsst.kafka_topics == [
        "fink_extragalactic_new_candidate_lsst",
        "fink_sn_near_galaxy_candidate_lsst",
        "fink_uniform_sample_lsst",
    ]
    assert (ztf.context_provider, lsst.context_provider) == ("ztf", "lsst")
    assert ztf.lasair_endpoint == "https://lasair-ztf.lsst.ac.uk/api"
    assert lsst.lasair_endpoint == "https://api.lasair.lsst.ac.uk/api"
    with pytest.raises(ConfigError, match="context_provider='ztf' does not read lsst.*'lsst'"):
        load_settings(survey="lsst", context_provider="ztf")


def test_several_topics_from_the_environment_and_the_one_topic_shorthand(monkeypatch):
    monkeypatch.setenv("FINKVRA_KAFKA_TOPICS", "fink_a_lsst, fink_b_lsst,fink_a_lsst")
    assert load_settings(survey="lsst").kafka_topics == ["fink_a_lsst", "fink_b_lsst"]
    monkeypatch.setenv("FINKVRA_KAFKA_TOPICS", '["t1", "t2"]')
    assert load_settings().kafka_topics == ["t1", "t2"]
    monkeypatch.delenv("FINKVRA_KAFKA_TOPICS")
    monkeypatch.setenv("FINKVRA_KAFKA_TOPIC", "fink_vra_ztf")  # today's variable still works
    assert load_settings().kafka_topics == ["fink_vra_ztf"]
    monkeypatch.setenv("FINKVRA_KAFKA_TOPICS", "t1,t2")
    with pytest.raises(ConfigError, match="disagree: set only kafka_topics"):
        load_settings()
    with pytest.raises(ConfigError, match="names topic 'bad topic'"):
        load_settings(kafka_topic=None, kafka_topics=["ok", "bad topic"])


def test_lsst_reads_the_lsst_credentials_file_and_all_its_topics(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FINKVRA_FINK_CREDENTIALS")  # the survey's default path
    folder = home / ".finkclient"
    folder.mkdir(parents=True)
    (folder / "ztf_credentials.yml").write_text(yaml.safe_dump(fink_credentials()))
    lsst_file = fink_credentials(
        username="alice_lsst", groupid="alice_lsst_vra", servers="kafka-lsst.fink-broker.org:24499",
        topics={"fink_sn_near_galaxy_candidate_lsst": {}, "fink_uniform_sample_lsst": {}},
    )  # fmt: skip
    (folder / "lsst_credentials.yml").write_text(yaml.safe_dump(lsst_file))
    lsst = load_settings(survey="lsst")
    assert lsst.fink_credentials == folder / "lsst_credentials.yml"
    assert lsst.kafka_bootstrap == "kafka-lsst.fink-broker.org:24499"
    assert (lsst.kafka_group_id, lsst.kafka_username) == ("alice_lsst_vra", "alice_lsst")
    assert lsst.kafka_topics == ["fink_sn_near_galaxy_candidate_lsst", "fink_uniform_sample_lsst"]
    ztf = load_settings()
    assert ztf.fink_credentials == folder / "ztf_credentials.yml"
    assert ztf.kafka_bootstrap == "kafka-ztf.fink-broker.org:24499"
    # A file without servers (not fink-client's) falls back on the survey's Fink server.
    (folder / "lsst_credentials.yml").write_text("username: bob\ngroupid: bob_g\n")
    assert load_settings(survey="lsst").kafka_bootstrap == "kafka-lsst.fink-broker.org:24499"


def test_no_server_error_names_the_surveys_server_and_credentials_file():
    with pytest.raises(ConfigError, match="lsst_credentials.yml.*kafka-lsst.fink-broker.org:24499"):
        kafka_consumer_config(load_settings(survey="lsst"))
