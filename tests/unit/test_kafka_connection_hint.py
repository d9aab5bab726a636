"""`connection_hint`: what the worker and producer print when the broker cannot be reached."""

from __future__ import annotations

from pydantic import SecretStr

from common.kafka import connection_hint
from common.settings import KafkaSettings


def test_sasl_over_tls_names_the_login_the_ca_and_the_address_but_no_secret():
    hint = connection_hint(
        KafkaSettings(
            bootstrap_servers="kafka:9093",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="camera-line-3",
            sasl_password=SecretStr("hunter2"),
            ssl_cafile="/etc/linewatch/ca.pem",
        )
    )
    assert "refused the SCRAM-SHA-512 login of user 'camera-line-3'" in hint
    assert "LINEWATCH_KAFKA__SASL_PASSWORD" in hint
    assert "LINEWATCH_KAFKA__SSL_CAFILE (/etc/linewatch/ca.pem)" in hint
    assert "no SASL_SSL listener answers at kafka:9093" in hint
    assert "hunter2" not in hint


def test_plaintext_mentions_neither_sasl_nor_tls():
    hint = connection_hint(KafkaSettings(bootstrap_servers="kafka:9092"))
    assert "no PLAINTEXT listener answers at kafka:9092" in hint
    assert "SASL_" not in hint and "SSL_CAFILE" not in hint
