"""Secured clusters: one group of settings (`TRIGGERS_KAFKA_SECURITY_PROTOCOL`, `..._SASL_*`,
`..._SSL_*`), spelled out for each client library we use.

    Settings ──► librdkafka_security()  confluent-kafka: worker loops, gateway, admin,
            │                           CLI, Python client, runner
            └──► faust_credentials()    Faust and aiokafka: the worker's app

A broker that refuses the credentials or the certificate is said once, naming the
setting to fix (`KafkaRefused`), instead of librdkafka's endless reconnects.
"""

from __future__ import annotations

import ssl
from typing import Any

from confluent_kafka import KafkaError

from processor.config import SecurityProtocol, Settings
from processor.errors import KafkaRefused

SASL = (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)
TLS = (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)


def librdkafka_security(settings: Settings) -> dict[str, Any]:
    """The security keys of a confluent-kafka client's configuration (none for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol is SecurityProtocol.PLAINTEXT:
        return {}
    config: dict[str, Any] = {"security.protocol": protocol.value}
    if protocol in SASL:
        assert settings.kafka_sasl_password is not None  # Settings checked it
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism.value
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol in TLS:
        for name in ("ca", "certificate", "key"):
            path = getattr(settings, f"kafka_ssl_{name}_location")
            if path is not None:
                config[f"ssl.{name}.location"] = str(path)
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A TLS context that trusts the configured CA (or the system's) and, if given,
    presents the client certificate."""
    ca = settings.kafka_ssl_ca_location
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if settings.kafka_ssl_certificate_location and settings.kafka_ssl_key_location:
        context.load_cert_chain(
            str(settings.kafka_ssl_certificate_location), str(settings.kafka_ssl_key_location)
        )
    return context


def faust_credentials(settings: Settings) -> Any:
    """Faust's `broker_credentials` for these settings (None for PLAINTEXT)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol is SecurityProtocol.PLAINTEXT:
        return None
    if protocol is SecurityProtocol.SSL:
        return faust.SSLCredentials(ssl_context(settings))
    assert settings.kafka_sasl_password is not None
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=ssl_context(settings) if protocol is SecurityProtocol.SASL_SSL else None,
        mechanism=settings.kafka_sasl_mechanism.value,
    )


def refusal(settings: Settings, error: KafkaError) -> KafkaRefused | None:
    """What to tell the user when librdkafka reports `error` while connecting, if it is the
    broker refusing who we are or us refusing its certificate (None otherwise)."""
    text = error.str()
    where = f"Kafka at {settings.kafka_bootstrap}"
    if error.code() == KafkaError._AUTHENTICATION or "SASL authentication error" in text:
        return KafkaRefused(
            f"{where} refused the credentials ({_detail(text)}): check "
            "TRIGGERS_KAFKA_SASL_USERNAME and TRIGGERS_KAFKA_SASL_PASSWORD, and that "
            f"TRIGGERS_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism.value} is one the "
            "cluster enables"
        )
    if "certificate verify failed" in text:
        return KafkaRefused(
            f"{where}: its TLS certificate is not trusted ({_detail(text)}): set "
            "TRIGGERS_KAFKA_SSL_CA_LOCATION to the PEM file of the CA that signed it"
        )
    if "SSL handshake failed" in text or "connecting to a PLAINTEXT broker listener" in text:
        return KafkaRefused(
            f"{where}: the TLS handshake failed ({_detail(text)}): check "
            f"TRIGGERS_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol.value} "
            "against the listener at that address"
        )
    return None


def _detail(text: str) -> str:
    """librdkafka's message without its `host:port/bootstrap: ` prefix or timing suffix."""
    detail = text.split(": ", 1)[1] if "/bootstrap: " in text else text
    return detail.split(" (after ", 1)[0]
