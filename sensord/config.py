"""The typed configuration tree: ``config.toml`` plus ``SENSORD_<SECTION>__<KEY>`` overrides.

This module is the only reader of the TOML file and of SENSORD_* variables.
Every section rejects unknown keys, so a typo fails at start-up, not at 3 a.m.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sensord.errors import ConfigError

ENV_PREFIX = "SENSORD_"
Seconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Section):
    """Broker session of the consumer."""

    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: Annotated[str, Field(min_length=1, max_length=64)] = "sensord-1"
    username: str = ""
    password: SecretStr = SecretStr("")
    topic_prefix: str = "sensord/v1"
    shared_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]*$")] = ""
    session_expiry_s: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 86_400
    receive_maximum: Annotated[int, Field(ge=1, le=65_535)] = 10_000
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    reconnect_initial_s: Seconds = 0.5
    reconnect_max_s: Seconds = 30.0


class DatabaseConfig(_Section):
    """TimescaleDB connection."""

    dsn: str = "postgresql://sensord@127.0.0.1:5433/sensord"
    password: SecretStr = SecretStr("")
    pool_min: Annotated[int, Field(ge=1)] = 2
    pool_max: Annotated[int, Field(ge=1)] = 4
    connect_timeout_s: Seconds = 5.0
    migrations_dir: str = ""


class IngestConfig(_Section):
    """Validation limits, batching and write retries."""

    batch_max_items: Annotated[int, Field(ge=1)] = 5_000
    batch_max_age_ms: Annotated[int, Field(ge=1)] = 50
    capacity: Annotated[int, Field(ge=1)] = 20_000
    writers: Annotated[int, Field(ge=1, le=16)] = 2
    max_payload_bytes: Annotated[int, Field(ge=64)] = 16_384
    # At most rules' DUPLICATE_WINDOW (600 s): a forged future reading must not push the
    # device's redelivered readings out of the engine's memory (docs/rules.md, "Time").
    max_future_s: Annotated[float, Field(gt=0, le=600)] = 60.0
    max_past_days: Seconds = 30.0
    retry_initial_s: Seconds = 0.5
    retry_max_s: Seconds = 10.0
    registry_refresh_s: Seconds = 60.0


class RetentionConfig(_Section):
    """sensord's own retention job (the Apache build of TimescaleDB has no policies)."""

    readings_days: Annotated[int, Field(ge=1)] = 90
    dead_letters_days: Annotated[int, Field(ge=1)] = 30
    interval_s: Seconds = 3600.0


class RulesConfig(_Section):
    """The rule engine (issue 4)."""

    enabled: bool = True
    directory: str = ""  # "" = rules/ of this source tree
    state_horizon_days: Annotated[float, Field(gt=0)] = 7.0
    absence_check_s: Seconds = 15.0
    registry_check_s: Seconds = 3600.0
    clock: Literal["receive", "device"] = "receive"


class WebhookConfig(_Section):
    """One organisation's webhook: POSTed every notification, signed with HMAC-SHA256."""

    url: HttpUrl
    secret: SecretStr = SecretStr("")  # the credential webhook-<org_id> fills it
    timeout_s: Seconds = 5.0


class DispatchConfig(_Section):
    """Work orders (issue 5): routing, deadlines, notifications, inbound commands."""

    enabled: bool = True
    policy_file: str = ""  # "" = routing.toml in the rules directory; SIGHUP reloads it
    interval_s: Seconds = 1.0
    batch: Annotated[int, Field(ge=1, le=10_000)] = 100
    audit_interval_s: Seconds = 15.0
    audit_grace_s: Seconds = 30.0
    commands: bool = True
    outbox_batch: Annotated[int, Field(ge=1, le=10_000)] = 100
    outbox_interval_s: Seconds = 1.0
    retry_initial_s: Seconds = 1.0
    retry_max_s: Seconds = 300.0
    publish_timeout_s: Seconds = 10.0
    webhooks: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], WebhookConfig] = {}


class MetricsConfig(_Section):
    """Prometheus exposition."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464


class LogConfig(_Section):
    """Logging to stderr (journald captures it)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class ShutdownConfig(_Section):
    """How long a stop may take to flush and acknowledge."""

    timeout_s: Seconds = 15.0


# systemd LoadCredential= names -> (section, key). Each file holds one secret.
CREDENTIALS: dict[str, tuple[str, str]] = {
    "database-password": ("database", "password"),
    "mqtt-password": ("mqtt", "password"),
}
WEBHOOK_CREDENTIAL = "webhook-"  # webhook-<org_id>: [dispatch.webhooks.<org_id>] secret


class _CredentialsSource(PydanticBaseSettingsSource):
    """Secrets from ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``); known names only."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Unused: __call__ returns the whole tree."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for entry in sorted(Path(directory).iterdir()):
            if entry.name.startswith(WEBHOOK_CREDENTIAL):
                org_id = entry.name.removeprefix(WEBHOOK_CREDENTIAL)
                webhooks = found.setdefault("dispatch", {}).setdefault("webhooks", {})
                webhooks[org_id] = {"secret": entry.read_text().removesuffix("\n")}
                continue
            if entry.name not in CREDENTIALS:
                raise ConfigError(
                    f"unknown credential {entry.name!r} in $CREDENTIALS_DIRECTORY; "
                    f"known: {', '.join(sorted(CREDENTIALS))}, {WEBHOOK_CREDENTIAL}<org_id>"
                )
            section, key = CREDENTIALS[entry.name]
            found.setdefault(section, {})[key] = entry.read_text().removesuffix("\n")
        return found


class Settings(BaseSettings):
    """The whole configuration; frozen once loaded."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    mqtt: MqttConfig = MqttConfig()
    database: DatabaseConfig = DatabaseConfig()
    ingest: IngestConfig = IngestConfig()
    retention: RetentionConfig = RetentionConfig()
    rules: RulesConfig = RulesConfig()
    dispatch: DispatchConfig = DispatchConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    shutdown: ShutdownConfig = ShutdownConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.ingest.capacity < self.mqtt.receive_maximum:
            # The broker may hand us receive_maximum unacknowledged messages at
            # once; a smaller buffer would have to refuse some of them.
            raise ValueError("ingest.capacity must be >= mqtt.receive_maximum")
        if self.ingest.capacity < self.ingest.batch_max_items:
            raise ValueError("ingest.capacity must be >= ingest.batch_max_items")
        if self.database.pool_max < self.database.pool_min:
            raise ValueError("database.pool_max must be >= database.pool_min")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment over systemd credentials over TOML over defaults."""
        return (
            init_settings,
            env_settings,
            _CredentialsSource(settings_cls),
            TomlConfigSettingsSource(settings_cls),
        )


def load_settings(path: Path | None, *, required: bool = False) -> Settings:
    """Read the configuration; raise ConfigError naming every bad key.

    ``path`` None or missing (when not ``required``) means defaults plus environment.
    """
    if path is not None and not path.is_file():
        if required:
            raise ConfigError(f"config file {path} does not exist")
        path = None
    toml_file = path
    stray = sorted(
        key
        for key in os.environ
        if key.startswith(ENV_PREFIX)
        and key[len(ENV_PREFIX) :].split("__")[0].lower() not in Settings.model_fields
    )
    if stray:
        # pydantic-settings ignores these; a mistyped override must not be.
        raise ConfigError("unknown SENSORD_* environment variables: " + ", ".join(stray))

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=toml_file)

    try:
        loaded = _FromFile()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"{path}: {exc}") from None
    return Settings.model_construct(
        **{name: getattr(loaded, name) for name in Settings.model_fields}
    )


def _describe(exc: ValidationError, path: Path | None) -> str:
    source = f"{path} and SENSORD_* environment" if path else "SENSORD_* environment"
    lines = [f"invalid configuration ({source}):"]
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "<root>"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ***."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, secrets masked, for printing."""
    data = settings.model_dump(mode="json")
    data["database"]["dsn"] = mask_dsn(settings.database.dsn)
    return data
