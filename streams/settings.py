"""The one typed settings object, read from RISKMON_* environment variables."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from riskmon.models.portfolio import PORTFOLIO_BY_DEFAULT

__all__ = ["Settings", "settings_error"]


class Settings(BaseSettings):
    """Everything a worker reads. ``RISKMON_BROKER_URL`` unset means: start the embedded broker."""

    model_config = SettingsConfigDict(env_prefix="RISKMON_", extra="ignore")

    broker_url: str | None = Field(None, description="host:port[,host:port]; unset: embedded Tansu broker")
    broker_kind: Literal["kafka", "tansu"] = Field("kafka", description="tansu turns on the Tansu fault workarounds")
    app_id: str = "riskmon"
    partitions: int = Field(4, ge=1, le=1024)
    topic_prefix: str = Field("riskmon", description="topics are PREFIX.transactions, PREFIX.decisions, ...")
    replication_factor: int = Field(1, ge=1, le=16, description="replicas of every topic the monitor creates (3 on a production cluster)")
    store: str = Field("memory://", description="memory:// or rocksdb://")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    datadir: Path = Path("./var/riskmon")
    web_host: str = Field("127.0.0.1", description="address the web and /metrics server binds (0.0.0.0 in a container)")
    web_port: int = Field(6066, ge=1, le=65535, description="Faust web and /metrics")
    batch_size: int = Field(1000, ge=1, description="most events the agent takes from its queue at once (it takes what is waiting)")
    max_record_bytes: int = Field(16_384, ge=256)
    lateness_s: float = Field(0.0, ge=0, le=86_400, description="event-time disorder applied in order (seconds)")
    late_events: Literal["apply", "deadletter"] = Field("apply", description="what happens to an event later than that")
    snapshot_every_s: float = Field(0.5, ge=0, le=60, description="most time between partition snapshots; 0: every round")
    max_future_s: float = Field(86_400.0, gt=0, description="events dated further ahead of the wall clock are dead-lettered")
    checkpoint_every: int = Field(500, ge=1, description="outcomes learned between model versions (model_scope partition)")
    model_scope: Literal["portfolio", "partition"] = Field(
        "portfolio" if PORTFOLIO_BY_DEFAULT else "partition", description="partition: a model per partition, learned there; portfolio: one model, learned by one "
                                 "trainer from every partition's outcomes and published to every worker")
    bad_dpd: int = Field(30, ge=1)
    policy_file: Path | None = None
    features_file: Path | None = Field(None, description="feature specification TOML (default: the shipped one)")
    model_file: Path | None = Field(None, description="a model from `riskmon train`: the portfolio's trainer (or each partition, with a model per partition) starts from it (default: "
                                                      "the expert scorecard, handing over as outcomes are learned)")
    learner: Literal["logistic", "batch", "tree"] = Field(
        "logistic", description="the learned model without a model file: online logistic regression, a mini-batch one "
                                "refitted every 250 outcomes, or an online tree (README: the risk model)")
    stall_s: float = Field(60.0, gt=0, description="a partition with input waiting and nothing applied for this "
                                                   "long is stalled: said in the log, metrics and an alert")
    session_timeout_s: float = Field(10.0, gt=0)
    heartbeat_s: float = Field(1.0, gt=0)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if "://" in value:
            raise ValueError(f"takes host:port[,host:port], without a scheme (got {value[:80]!r}; "
                             f"try {value.split('://', 1)[1][:80]!r})")
        for address in value.split(","):
            host, _, port = address.strip().rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"takes host:port[,host:port] with ports 1-65535 (got {address.strip()[:80]!r})")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs RISKMON_SASL_MECHANISM, "
                    "RISKMON_SASL_USERNAME and RISKMON_SASL_PASSWORD"
                )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"RISKMON_{name.upper()} {path} is not a readable file")
        if not (self.store.startswith("memory://") or self.store.startswith("rocksdb://")):
            raise ValueError("RISKMON_STORE must be memory:// or rocksdb://")
        return self

    def to_env(self) -> dict[str, str]:
        """Every setting as the RISKMON_* variable that reads it back, so a child process gets all of them."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"RISKMON_{name.upper()}"] = str(value)
        return env

    @property
    def input_topics(self) -> dict[str, str]:
        """Category -> topic name (control, lifecycle, transactions, repayments)."""
        return {c: f"{self.topic_prefix}.{c}" for c in ("control", "lifecycle", "transactions", "repayments")}

    @property
    def topic_decisions(self) -> str:
        return f"{self.topic_prefix}.decisions"

    @property
    def topic_shadow_decisions(self) -> str:
        """What a candidate policy in shadow would decide (riskmon.models.shadow): read by people, acted on by none."""
        return f"{self.topic_prefix}.shadow-decisions"

    @property
    def topic_deadletter(self) -> str:
        return f"{self.topic_prefix}.deadletter"

    @property
    def topic_repartition(self) -> str:
        """Internal: records a producer put on another partition than the one that owns their account go on here."""
        return f"{self.topic_prefix}.repartition"

    @property
    def topic_training(self) -> str:
        """Internal: the outcomes partitions reveal, and their watermarks, for the portfolio's trainer."""
        return f"{self.topic_prefix}.training"

    @property
    def topic_models(self) -> str:
        """The portfolio model's versions, as the trainer publishes them; every worker reads it whole."""
        return f"{self.topic_prefix}.models"

    @property
    def single_partition_topics(self) -> list[str]:
        return [self.input_topics["control"], self.topic_training, self.topic_models]

    @property
    def all_topics(self) -> list[str]:
        return [*self.input_topics.values(), self.topic_repartition, self.topic_decisions, self.topic_shadow_decisions,
                self.topic_deadletter,
                self.topic_training, self.topic_models]


def settings_error(exc: ValidationError) -> str:
    """One line naming each RISKMON_* variable that is wrong, what it holds and what it should be."""
    parts = []
    for e in exc.errors():
        name = "_".join(str(x) for x in e.get("loc", ()))
        secret = "password" in name or "secret" in name
        shown = f"={e['input']!r}" if name and "input" in e and not isinstance(e["input"], dict) and not secret else ""
        what = e.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"RISKMON_{name.upper()}{shown}: {what}" if name else what)
    return "; ".join(parts)
