"""Settings: YAML sections become typed, validated config; every bad value names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import ConfigError, load_settings


def load(tmp_path: Path, text: str, **env: str):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(text)
    return load_settings(cfg, env=env)


def test_defaults_without_a_file() -> None:
    s = load_settings(env={})
    assert s.detection.enabled and s.detection.data.window_events == 5000
    assert s.detection.concept_for("any").adwin_delta == s.detection.concept.adwin_delta


def test_detection_sections_durations_and_per_model_concept_parameters(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """
detection:
  data: {window_events: 2000, window: 30s, correction: holm, min_psi: 0.2}
  anomaly: {threshold: 0.7, height: 12}
  ops: {silence_after: 45s, gpu_util_percent: 90}
  concept: {adwin_delta: 0.001}
models:
  fraud: {task: classification, concept_drift: {ph_threshold: 40}}
""",
    )
    d = s.detection
    assert (d.data.window_events, d.data.window_ms, d.data.correction, d.data.min_psi) == (
        2000,
        30_000,
        "holm",
        0.2,
    )
    assert (d.anomaly.threshold, d.anomaly.height, d.ops.silence_after_ms, d.ops.gpu_util_percent) == (
        0.7,
        12,
        45_000,
        90.0,
    )
    fraud = d.concept_for("fraud")
    assert fraud.ph_threshold == 40.0 and fraud.adwin_delta == 0.001  # per-model on top of the section
    assert d.concept_for("other").ph_threshold != 40.0
    assert s.metrics.model("fraud").task.task == "classification"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("detection: {data: {window_events: 0}}", "detection.data.window_events"),
        ("detection: {data: {window_events: 2.5}}", "detection.data.window_events"),
        ("detection: {data: {alpha: 2}}", "detection.data.alpha"),
        ("detection: {data: {window_jitter: 2}}", "detection.data.window_jitter"),
        ("detection: {data: {correction: bonferroni}}", "detection.data.correction"),
        ("detection: {data: {window: soon}}", "detection.data.window"),
        ("detection: {anomaly: {threshold: 1.5}}", "detection.anomaly.threshold"),
        ("detection: {anomaly: {enabled: yes please}}", "detection.anomaly.enabled"),
        ("detection: {ops: {gpu_memory_fraction: 0}}", "detection.ops.gpu_memory_fraction"),
        ("detection: {concept: {nope: 1}}", "detection.concept.nope"),
        ("detection: {sideways: {}}", "detection.sideways"),
        ("detection: {enabled: 1}", "detection.enabled"),
        ("detection: [1, 2]", "detection"),
        ("models: {m: {concept_drift: {adwin_delta: 5}}}", "models.m.concept_drift.adwin_delta"),
        ("metrics: {windows: []}", "metrics.windows"),
        ("web_port: 70000", "web_port"),
        ("surprise: 1", "surprise"),
    ],
)
def test_a_bad_value_fails_fast_naming_its_field(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text)
    assert str(exc.value).startswith(names), str(exc.value)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    s = load(tmp_path, "web_port: 7000\n", DRIFTLINE_WEB_PORT="7100")
    assert s.web_port == 7100
    with pytest.raises(ConfigError, match="DRIFTLINE_PARTITIONS"):
        load(tmp_path, "{}\n", DRIFTLINE_PARTITIONS="many")


# -- kafka: client security (SASL, TLS, mTLS) --------------------------------------------------------

def _pki(tmp: Path) -> dict[str, Path]:
    """A CA and a client certificate signed by it (PEM files), plus an unrelated key."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    now = dt.datetime.now(dt.UTC)
    ca_key, user_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = (x509.CertificateBuilder().subject_name(name("test-ca")).issuer_name(name("test-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    user = (x509.CertificateBuilder().subject_name(name("driftline")).issuer_name(ca.subject)
            .public_key(user_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": tmp / "ca.crt", "cert": tmp / "user.crt", "key": tmp / "user.key",
             "other": tmp / "other.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(user.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(pem_key(user_key))
    files["other"].write_bytes(pem_key(other_key))
    return files


SCRAM_ENV = {
    "DRIFTLINE_BOOTSTRAP_SERVERS": "kafka-0.example:9093,kafka-1.example:9093",
    "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "DRIFTLINE_KAFKA_SASL_USERNAME": "driftline",
    "DRIFTLINE_KAFKA_SASL_PASSWORD": "s3cr3t-pw",
}


def test_plaintext_is_the_default_and_adds_nothing_but_the_protocol() -> None:
    s = load_settings(env={})
    assert s.kafka.security_protocol == "PLAINTEXT" and s.kafka.ssl_context() is None
    assert s.kafka_client_config() == {"bootstrap.servers": s.bootstrap, "security.protocol": "PLAINTEXT"}


def test_sasl_scram_from_the_environment_reaches_every_client_config_and_is_never_printed() -> None:
    from streams.broker.admin import admin_config

    s = load_settings(env=SCRAM_ENV)
    cfg = s.kafka_client_config({"group.id": "g", "security.protocol": "SASL_SSL"})
    assert cfg == {"bootstrap.servers": "kafka-0.example:9093,kafka-1.example:9093",
                   "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                   "sasl.username": "driftline", "sasl.password": "s3cr3t-pw", "group.id": "g"}
    assert admin_config(s)["sasl.password"] == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(s) and "s3cr3t-pw" not in str(s.kafka) and "s3cr3t-pw" not in str(s.extra)
    assert s.kafka.ssl_context() is not None  # SASL_SSL: TLS with the system's CAs


def test_the_password_comes_from_a_file_or_a_reference_in_the_yaml(tmp_path: Path) -> None:
    pw = tmp_path / "password"
    pw.write_text("from-a-file\n")  # `echo` and Kubernetes secret files may end in a newline
    s = load(tmp_path, f"bootstrap_servers: k:9093\nkafka: {{security_protocol: SASL_SSL, sasl_mechanism: "
                       f"SCRAM-SHA-256, sasl_username: u, sasl_password_file: {pw}}}\n")
    assert s.kafka.client_config()["sasl.password"] == "from-a-file"
    s = load(tmp_path, "bootstrap_servers: k:9093\nkafka: {security_protocol: sasl_plaintext, "
                       "sasl_mechanism: plain, sasl_username: u, sasl_password: 'env:KAFKA_PW'}\n",
             KAFKA_PW="from-env")
    assert (s.kafka.security_protocol, s.kafka.sasl_mechanism) == ("SASL_PLAINTEXT", "PLAIN")
    assert s.kafka.client_config()["sasl.password"] == "from-env"
    assert "ssl.ca.location" not in s.kafka_client_config()
    s = load_settings(env={**{k: v for k, v in SCRAM_ENV.items() if k != "DRIFTLINE_KAFKA_SASL_PASSWORD"},
                           "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE": str(pw)})
    assert s.kafka.client_config()["sasl.password"] == "from-a-file"


@pytest.mark.parametrize(
    ("yaml_text", "env", "names"),
    [
        ("kafka: {security_protocol: KERBEROS}", {}, "kafka.security_protocol"),
        ("kafka: {security_protocol: SASL_SSL, sasl_username: u}", {"DRIFTLINE_KAFKA_SASL_PASSWORD": "p"},
         "kafka.sasl_mechanism"),
        ("kafka: {security_protocol: SASL_SSL, sasl_mechanism: GSSAPI, sasl_username: u}", {},
         "kafka.sasl_mechanism"),
        ("kafka: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512}",
         {"DRIFTLINE_KAFKA_SASL_PASSWORD": "p"}, "kafka.sasl_username"),
        ("kafka: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, sasl_username: u}", {},
         "kafka.sasl_password"),
        ("kafka: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, sasl_username: u}",
         {"DRIFTLINE_KAFKA_SASL_PASSWORD": ""}, "kafka.sasl_password"),
        ("kafka: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, sasl_username: u, "
         "sasl_password_file: /nonexistent/pw}", {}, "kafka.sasl_password_file"),
        ("kafka: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, sasl_username: u, "
         "sasl_password_file: /nonexistent/pw}", {"DRIFTLINE_KAFKA_SASL_PASSWORD": "p"},
         "kafka.sasl_password_file"),
        ("kafka: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, sasl_username: u, "
         "sasl_password: hunter2}", {}, "kafka.sasl_password"),
        ("kafka: {sasl_username: u}", {}, "kafka.sasl_username"),
        ("kafka: {}", {"DRIFTLINE_KAFKA_SASL_PASSWORD": "p"}, "kafka.sasl_password"),
        ("kafka: {ssl_ca_file: /etc/hostname}", {}, "kafka.ssl_ca_file"),
        ("kafka: {security_protocol: SSL, ssl_ca_file: /nonexistent/ca.crt}", {}, "kafka.ssl_ca_file"),
        ("kafka: {security_protocol: SSL}", {"DRIFTLINE_KAFKA_SSL_CA_FILE": "/nonexistent/ca.crt"},
         "kafka.ssl_ca_file (from DRIFTLINE_KAFKA_SSL_CA_FILE)"),
        ("kafka: {sasl_passwd: x}", {}, "kafka.sasl_passwd"),
        ("kafka: {security_protocol: 9093}", {}, "kafka.security_protocol"),
        ("kafka: [SASL_SSL]", {}, "kafka"),
    ],
)
def test_a_bad_kafka_security_setting_names_its_field(tmp_path: Path, yaml_text: str, env: dict[str, str],
                                                      names: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, "bootstrap_servers: k:9093\n" + yaml_text + "\n", **env)
    assert str(exc.value).startswith(names), str(exc.value)
    assert "hunter2" not in str(exc.value) and "'p'" not in str(exc.value)


def test_the_embedded_local_broker_only_speaks_plaintext() -> None:
    with pytest.raises(ConfigError, match=r"^kafka.security_protocol: SASL_SSL needs bootstrap_servers"):
        load_settings(env={k: v for k, v in SCRAM_ENV.items() if k != "DRIFTLINE_BOOTSTRAP_SERVERS"})


def test_mutual_tls_client_certificate(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    env = {"DRIFTLINE_BOOTSTRAP_SERVERS": "k:9093", "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL",
           "DRIFTLINE_KAFKA_SSL_CA_FILE": str(pki["ca"]), "DRIFTLINE_KAFKA_SSL_CERT_FILE": str(pki["cert"]),
           "DRIFTLINE_KAFKA_SSL_KEY_FILE": str(pki["key"])}
    s = load_settings(env=env)
    assert s.kafka_client_config() == {
        "bootstrap.servers": "k:9093", "security.protocol": "SSL", "ssl.ca.location": str(pki["ca"]),
        "ssl.certificate.location": str(pki["cert"]), "ssl.key.location": str(pki["key"])}
    ctx = s.kafka.ssl_context()
    assert ctx is not None and ctx.check_hostname and ctx.get_ca_certs()[0]["subject"] == ((("commonName",
                                                                                           "test-ca"),),)
    with pytest.raises(ConfigError, match=r"^kafka.ssl_cert_file \(from DRIFTLINE_KAFKA_SSL_CERT_FILE\)"):
        load_settings(env={**env, "DRIFTLINE_KAFKA_SSL_KEY_FILE": str(pki["other"])})  # not the cert's key
    with pytest.raises(ConfigError, match=r"^kafka.ssl_key_file: a client certificate needs both"):
        load_settings(env={k: v for k, v in env.items() if k != "DRIFTLINE_KAFKA_SSL_KEY_FILE"})
    with pytest.raises(ConfigError, match=r"^kafka.ssl_ca_file \(from DRIFTLINE_KAFKA_SSL_CA_FILE\): not a"):
        load_settings(env={**env, "DRIFTLINE_KAFKA_SSL_CA_FILE": str(pki["key"])})


def test_librdkafka_and_faust_accept_what_the_settings_produce(tmp_path: Path) -> None:
    """The keys are real librdkafka properties, and faust maps its credentials onto aiokafka alike."""
    from confluent_kafka import Producer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.app.factory import broker_credentials

    pki = _pki(tmp_path)
    scram = load_settings(env={**SCRAM_ENV, "DRIFTLINE_KAFKA_SSL_CA_FILE": str(pki["ca"])})
    mtls = load_settings(env={"DRIFTLINE_BOOTSTRAP_SERVERS": "k:9093",
                              "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL",
                              "DRIFTLINE_KAFKA_SSL_CA_FILE": str(pki["ca"]),
                              "DRIFTLINE_KAFKA_SSL_CERT_FILE": str(pki["cert"]),
                              "DRIFTLINE_KAFKA_SSL_KEY_FILE": str(pki["key"])})
    for s in (scram, mtls):  # librdkafka validates the properties at construction (no connection yet)
        Producer(s.kafka_client_config({"bootstrap.servers": "127.0.0.1:1"})).flush(0)
    auth = credentials_to_aiokafka_auth(broker_credentials(scram))
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["sasl_plain_username"],
            auth["sasl_plain_password"]) == ("SASL_SSL", "SCRAM-SHA-512", "driftline", "s3cr3t-pw")
    assert auth["ssl_context"] is not None
    auth = credentials_to_aiokafka_auth(broker_credentials(mtls))
    assert auth["security_protocol"] == "SSL" and auth["ssl_context"].get_ca_certs()
    assert broker_credentials(load_settings(env={})) is None
    plain_sasl = load_settings(env={**SCRAM_ENV, "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    auth = credentials_to_aiokafka_auth(broker_credentials(plain_sasl))
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["ssl_context"] is None


def test_the_sdk_takes_the_same_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry

    from streams.sdk import DriftlineClient
    from tests.unit.sdk import FakeProducer

    for k, v in SCRAM_ENV.items():
        monkeypatch.setenv(k, v)
    producer = FakeProducer()
    client = DriftlineClient.from_env(model="churn", model_version="v1", producer_factory=producer.factory,
                                      registry=CollectorRegistry(), producer_config={"linger.ms": 5})
    try:
        cfg = producer.configs[0]
        assert (cfg["security.protocol"], cfg["sasl.mechanism"], cfg["sasl.password"], cfg["linger.ms"]) == (
            "SASL_SSL", "SCRAM-SHA-512", "s3cr3t-pw", 5)
    finally:
        client.close()
    monkeypatch.setenv("DRIFTLINE_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValueError, match=r"^kafka\.security_protocol"):
        DriftlineClient.from_env(model="churn", model_version="v1", producer_factory=producer.factory,
                                 registry=CollectorRegistry())
