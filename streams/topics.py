"""Create the monitor's topics (idempotent)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from .settings import Settings

CONTROL_PARTITIONS = 1  # the control topic's: every worker reads it whole, in its one order (streams.control)

__all__ = ["create_topics", "client_config", "start_client"]


def client_config(settings: Settings) -> dict[str, Any]:
    """aiokafka connection settings (security) from the typed settings."""
    cfg: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL"):
        assert settings.sasl_password is not None
        cfg.update(sasl_mechanism=settings.sasl_mechanism, sasl_plain_username=settings.sasl_username,
                   sasl_plain_password=settings.sasl_password.get_secret_value())
    if "SSL" in settings.security_protocol:
        from aiokafka.helpers import create_ssl_context

        cfg["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    return cfg


async def start_client(client: Any, settings: Settings, bootstrap: str, timeout_s: float = 20.0) -> None:
    """Start an aiokafka client; a broker it cannot reach is a ConnectionError that says where and how.

    The message names the protocol, mechanism and user, never the password, and why the broker could
    not be used when aiokafka said so (a refused login, an untrusted certificate).
    """
    why = _Why()
    logging.getLogger("aiokafka").addHandler(why)  # aiokafka.client logs as "aiokafka"
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except (KafkaError, asyncio.TimeoutError, OSError) as exc:
        close = getattr(client, "close", None) or client.stop
        await close()
        security = settings.security_protocol + (f" {settings.sasl_mechanism} as {settings.sasl_username!r}"
                                                 if settings.security_protocol.startswith("SASL") else "")
        raise ConnectionError(
            f"cannot reach Kafka at {bootstrap} over {security}: {why.text() or _error_text(exc)}. "
            "Check RISKMON_BROKER_URL, RISKMON_SECURITY_PROTOCOL and the SASL/SSL settings"
        ) from None
    finally:
        logging.getLogger("aiokafka").removeHandler(why)


class _Why(logging.Handler):
    """aiokafka logs why each connection it tried failed, and raises only "Unable to bootstrap": keep the why.

    >>> w = _Why(); w.emit(logging.makeLogRecord({"msg": 'Unable connect to "h:1": %s', "args": ("[Error 58] SaslAuthenticationFailed: bad",)}))
    >>> w.text()
    'the broker refused the login (wrong user name or password): [Error 58] SaslAuthenticationFailed: bad'
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Unable connect to"):
            self.last = message.split(": ", 1)[-1][:240]

    def text(self) -> str | None:
        if self.last is None:
            return None
        if "SaslAuthenticationFailed" in self.last:
            return f"the broker refused the login (wrong user name or password): {self.last}"
        if "CERTIFICATE_VERIFY_FAILED" in self.last:
            return f"the broker's certificate is not trusted (RISKMON_SSL_CAFILE names the CA to trust): {self.last}"
        return self.last


async def create_topics(settings: Settings, bootstrap: str, timeout_s: float = 20.0) -> list[str]:
    """Create every topic the monitor uses with ``settings.partitions`` partitions; return those created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_config(settings))
    await start_client(admin, settings, bootstrap, timeout_s)
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        # Co-partitioned: every input, output and the tables' changelogs share the partition count;
        # the control topic, which every worker reads whole, has one (streams.control).
        # The control topic, and the portfolio model's training and model topics, have one each: the first
        # two every worker reads whole (streams.control, streams.trainer), the training topic one trainer reads.
        single = set(settings.single_partition_topics)
        want = {t: CONTROL_PARTITIONS if t in single else settings.partitions for t in settings.all_topics}
        for name, partitions in want.items():
            if name in existing:
                continue
            # They keep every record: a partition that starts afresh reads the control topic from the first, and
            # a trainer restarts from the model topic's last record and the training records after its offset.
            configs = {"retention.ms": "-1"} if name in single else None
            try:
                await admin.create_topics([NewTopic(name, partitions, settings.replication_factor, topic_configs=configs)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        described = await admin.describe_topics(settings.all_topics)
        for d in described:
            n = len(d.get("partitions", []))
            if n and d["topic"] in single and n != CONTROL_PARTITIONS:
                raise ValueError(
                    f"topic {d['topic']} has {n} partitions: the {d['topic'].rsplit('.', 1)[-1]} topic must have "
                    f"{CONTROL_PARTITIONS}, so that one record reaches every worker in one order (delete it, or set "
                    "another RISKMON_TOPIC_PREFIX)"
                )
            if n and d["topic"] not in single and n != settings.partitions:
                raise ValueError(
                    f"topic {d['topic']} has {n} partitions, the monitor is set to {settings.partitions}: "
                    "co-partitioned topics must match (set RISKMON_PARTITIONS)"
                )
    finally:
        await admin.close()
    return created


def _error_text(exc: BaseException) -> str:
    """The exception's name and message, the name once (aiokafka's messages often start with it)."""
    name, text = type(exc).__name__, str(exc)[:160]
    return text if text.startswith(name) else f"{name} {text}".rstrip()
