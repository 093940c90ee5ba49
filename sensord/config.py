"""The typed configuration tree: ``config.toml`` plus ``SENSORD_<SECTION>__<KEY>`` overrides.

This module is the only reader of the TOML file and of SENSORD_* variables.
Every section rejects unknown keys, so a typo fails at start-up, not at 3 a.m.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
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
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_verify_hostname: bool = True
    tls_min_version: Literal["1.2", "1.3"] = "1.2"

    @model_validator(mode="after")
    def _tls_files(self) -> MqttConfig:
        # Checked here, so check-config and `run` refuse a missing or bad file by its key
        # instead of the daemon retrying a handshake that can never succeed.
        try:
            self.tls_context()
        except _TlsProblem as problem:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "mqtt_tls", "{problem}", {"problem": problem.message}
                        ),
                        loc=(problem.key,),
                        input=getattr(self, problem.key),
                    )
                ],
            ) from None
        return self

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context for the broker connection; None when ``tls`` is off."""
        files = {"tls_ca_file": self.tls_ca_file, "tls_cert_file": self.tls_cert_file,
                 "tls_key_file": self.tls_key_file}  # fmt: skip
        if not self.tls:
            for key, value in files.items():
                if value:
                    raise _TlsProblem(key, "is set but tls = false; set tls = true or remove it")
            return None
        if self.tls_key_file and not self.tls_cert_file:
            raise _TlsProblem("tls_key_file", "needs tls_cert_file (the client certificate)")
        for key, value in files.items():
            if value:
                try:
                    with open(value, "rb") as readable:
                        readable.read(1)
                except OSError as exc:
                    raise _TlsProblem(key, f"cannot read {value}: {exc.strerror or exc}") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname on
        context.minimum_version = (
            ssl.TLSVersion.TLSv1_3 if self.tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        )
        context.check_hostname = self.tls_verify_hostname
        try:
            if self.tls_ca_file:
                context.load_verify_locations(cafile=self.tls_ca_file)
            else:
                context.load_default_certs()
        except ssl.SSLError as exc:
            raise _TlsProblem("tls_ca_file", f"no CA certificate (PEM) in it: {exc}") from None
        if self.tls_cert_file:
            try:
                context.load_cert_chain(
                    self.tls_cert_file, self.tls_key_file or None, password=_no_passphrase
                )
            except (ssl.SSLError, _Encrypted) as exc:
                key = "tls_key_file" if self.tls_key_file else "tls_cert_file"
                raise _TlsProblem(
                    key, f"not a PEM certificate with its unencrypted private key: {exc}"
                ) from None
        return context


class _TlsProblem(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


class _Encrypted(Exception):
    """The key asks for a passphrase; a daemon has no one to type it (protect the file)."""


def _no_passphrase() -> str:
    raise _Encrypted("the key is encrypted")


class DatabaseConfig(_Section):
    """TimescaleDB connection."""

    dsn: str = "postgresql://sensord@127.0.0.1:5433/sensord"
    password: SecretStr = SecretStr("")
    migrate_dsn: str = Field(
        default="",
        description="the schema owner's login, used by `sensord migrate` only;"
        ' "" = migrate with dsn (one role for everything)',
    )
    migrate_password: SecretStr = Field(
        default=SecretStr(""),
        description="password of migrate_dsn; from the credential database-migrate-password",
    )
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
    dead_letter_max_bytes: Annotated[int, Field(ge=64)] = 4_096


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


WEBHOOK_SECRET_MIN = 32


class WebhookConfig(_Section):
    """One organisation's webhook: POSTed every notification, signed with HMAC-SHA256.

    The signature is all a receiver can trust, so the key must be a real one, and
    the body (personal data) and its signature must not cross a network in clear:
    https, or http to this host only when ``allow_http_loopback`` says so.
    """

    url: HttpUrl
    secret: SecretStr = Field(
        description=f"the HMAC-SHA256 key, at least {WEBHOOK_SECRET_MIN} characters;"
        " from the credential webhook-<org_id>"
    )
    timeout_s: Seconds = 5.0
    allow_http_loopback: bool = False

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value()) < WEBHOOK_SECRET_MIN:
            raise PydanticCustomError(
                "webhook_secret",
                "must be at least {min} characters (an HMAC key, e.g. `openssl rand -hex 32`)",
                {"min": WEBHOOK_SECRET_MIN},
            )
        return secret

    @model_validator(mode="after")
    def _transport(self) -> WebhookConfig:
        if self.url.scheme == "https":
            return self
        if not self.allow_http_loopback:
            problem = "must be https (http only to this host, with allow_http_loopback = true)"
        elif not is_loopback(self.url.host or ""):
            problem = "http is allowed only to 127.0.0.0/8, ::1 or localhost"
        else:
            return self
        raise ValidationError.from_exception_data(
            type(self).__name__,
            [
                InitErrorDetails(
                    type=PydanticCustomError("webhook_url", problem),
                    loc=("url",),
                    input=str(self.url),
                )
            ],
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a URL's host; IPv6 in brackets) is this machine: 127.0.0.0/8,
    ::1 or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    # Spelled out: what counts as loopback for an IPv4-mapped address differs by Python.
    if isinstance(address, ipaddress.IPv4Address):
        return address in ipaddress.IPv4Network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


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
    "database-migrate-password": ("database", "migrate_password"),
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
    data["database"]["migrate_dsn"] = mask_dsn(settings.database.migrate_dsn)
    return data
