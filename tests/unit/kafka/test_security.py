"""One group of settings for secured clusters, spelled out for each client library."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest
from confluent_kafka import KafkaError
from pydantic import ValidationError

from processor.config import Settings
from processor.kafka.clients import common_config
from processor.kafka.security import faust_credentials, librdkafka_security, refusal


def test_plaintext_adds_nothing_and_faust_gets_no_credentials() -> None:
    settings = Settings()
    assert librdkafka_security(settings) == {}
    assert faust_credentials(settings) is None
    assert "security.protocol" not in common_config(settings)


def test_sasl_ssl_reaches_every_librdkafka_client_and_faust(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_ssl_ca_location=ca,
    )
    assert common_config(settings) | {"logger": None} == {
        "bootstrap.servers": "localhost:9092",
        "logger": None,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "svc",
        "sasl.password": "pw",
        "ssl.ca.location": str(ca),
    }
    assert "pw" not in repr(settings)  # the password never shows in a log of the settings


def test_sasl_plaintext_gives_faust_sasl_without_tls() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password, credentials.ssl_context) == (
        "svc",
        "pw",
        None,
    )
    assert credentials.mechanism.value == "PLAIN"
    assert librdkafka_security(settings)["security.protocol"] == "SASL_PLAINTEXT"


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs TRIGGERS_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_ca_location": "/nope/ca.pem"},
            "TRIGGERS_KAFKA_SSL_CA_LOCATION=/nope/ca.pem: no such file",
        ),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
    ],
)
def test_incomplete_or_wrong_security_settings_are_refused(
    values: dict[str, str], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(**values)


def test_client_certificate_and_key_go_together(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    with pytest.raises(ValidationError, match="go together"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_certificate_location=cert)


def test_refusals_name_the_setting_to_fix() -> None:
    settings = Settings(
        kafka_bootstrap="b:9094",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
    )
    auth = KafkaError(
        KafkaError._AUTHENTICATION,
        "sasl_ssl://b:9094/bootstrap: SASL authentication error: Authentication failed "
        "(after 305ms in state AUTH_REQ)",
    )
    said = str(refusal(settings, auth))
    assert "Kafka at b:9094 refused the credentials (SASL authentication error" in said
    assert "TRIGGERS_KAFKA_SASL_PASSWORD" in said and "(after" not in said
    untrusted = KafkaError(
        KafkaError._SSL,
        "sasl_ssl://b:9094/bootstrap: SSL handshake failed: certificate verify failed",
    )
    assert "TRIGGERS_KAFKA_SSL_CA_LOCATION" in str(refusal(settings, untrusted))
    down = KafkaError(KafkaError._TRANSPORT, "b:9094/bootstrap: Connect to ipv4#b:9094 failed")
    assert refusal(settings, down) is None  # not answering is not a refusal: wait for it
