"""Kafka security settings against a real broker: SASL_SSL with SCRAM-SHA-512, and mutual TLS.

A second local Apache Kafka broker (the project's own, streams/broker/local.py)
gets two more listeners: SASL_SSL (SCRAM-SHA-512 users) and SSL with
``ssl.client.auth=required``, both with a certificate for ``localhost`` signed
by a CA made here. Then the settings' ``kafka:`` section is exercised on every
kind of client: the admin client (topic creation), a producer and the topic
follower (confluent-kafka), aiokafka with faust's credentials, and a whole
``driftline worker`` that must become ready and dead-letter a bad record, all
over SASL_SSL. Wrong credentials must be refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from streams.app.profiles import TopicFollower
from streams.broker.admin import create_topics
from streams.broker.local import LocalBroker
from streams.config import Settings, load_settings
from tests.integration.conftest import WorkerProcess, free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "driftline", "s3cr3t-pw"


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
             issuer_key: ec.EllipticCurvePrivateKey, ca: bool = False) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(name)
             .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if cn == "localhost":
            san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    pem = serialization.Encoding.PEM
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = cert("driftline-test-ca", ca_key, None, ca_key, ca=True)
    server = cert("localhost", server_key, ca, ca_key)
    client = cert(USER, client_key, ca, ca_key)
    files = {"ca": d / "ca.crt", "server": d / "server.pem", "cert": d / "user.crt", "key": d / "user.key"}
    files["ca"].write_bytes(ca.public_bytes(pem))
    files["server"].write_bytes(key_pem(server_key) + server.public_bytes(pem))  # Kafka's PEM keystore
    files["cert"].write_bytes(client.public_bytes(pem))
    files["key"].write_bytes(key_pem(client_key))
    return files


@dataclass(frozen=True, slots=True)
class SecuredBroker(LocalBroker):
    """The local broker with SASL_SSL (SCRAM-SHA-512) and mutual-TLS listeners added."""

    sasl_port: int = 0
    mtls_port: int = 0
    pki: dict[str, Path] = field(default_factory=dict)

    def _write_config(self) -> Path:
        props = LocalBroker._write_config(self)  # slotted dataclass: no zero-argument super()
        replaced = ("listeners=", "advertised.listeners=", "listener.security.protocol.map=")
        keep = [line for line in props.read_text().splitlines() if not line.startswith(replaced)]
        props.write_text("\n".join([
            *keep,
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port},"
            f"SASL_SSL://127.0.0.1:{self.sasl_port},MTLS://127.0.0.1:{self.mtls_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},SASL_SSL://localhost:{self.sasl_port},"
            f"MTLS://localhost:{self.mtls_port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL",
            "inter.broker.listener.name=PLAINTEXT",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.pki['server']}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.pki['ca']}",
            "listener.name.mtls.ssl.client.auth=required",
            "",
        ]))
        return props


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    if os.environ.get("DRIFTLINE_TEST_BOOTSTRAP"):
        pytest.skip("an external cluster is configured; this test runs its own secured local broker")
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    port, controller, sasl, mtls = sorted(ports)
    defaults = Settings()
    broker = SecuredBroker(version=defaults.kafka_version, cache_dir=Path(defaults.kafka_cache_dir),
                           data_dir=tmp_path_factory.mktemp("secured-kafka"), port=port,
                           controller_port=controller, sasl_port=sasl, mtls_port=mtls,
                           pki=make_pki(tmp_path_factory.mktemp("pki")))
    broker.up()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # the PLAINTEXT listener: set-up only
        upsert = UserScramCredentialUpsertion(USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                              PASSWORD.encode())
        for fut in admin.alter_user_scram_credentials([upsert]).values():
            fut.result(30)
        yield broker
    finally:
        broker.down()


def scram_env(b: SecuredBroker, password_file: Path) -> dict[str, str]:
    password_file.write_text(PASSWORD + "\n")
    return {
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "DRIFTLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "DRIFTLINE_KAFKA_SASL_USERNAME": USER,
        "DRIFTLINE_KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "DRIFTLINE_KAFKA_SSL_CA_FILE": str(b.pki["ca"]),
    }


def mtls_env(b: SecuredBroker) -> dict[str, str]:
    return {
        "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "DRIFTLINE_KAFKA_SSL_CA_FILE": str(b.pki["ca"]),
        "DRIFTLINE_KAFKA_SSL_CERT_FILE": str(b.pki["cert"]),
        "DRIFTLINE_KAFKA_SSL_KEY_FILE": str(b.pki["key"]),
    }


def settings_for(port: int, env: dict[str, str], tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return load_settings(env=env, bootstrap_servers=f"localhost:{port}", topic_prefix=f"sec{tag}.",
                         app_id=f"driftline-sec-{tag}", data_dir=str(tmp_path / "worker"),
                         web_port=free_port(), partitions=2)


def round_trip(s: Settings) -> None:
    """Create the topics, produce one control record and read it back, all through ``s``'s security."""
    assert set(create_topics(s).values()) == {"created"}
    p = Producer(s.kafka_client_config({"acks": "all"}))
    p.produce(s.topic("control"), key=b"k", value=b"over-" + s.kafka.security_protocol.encode())
    assert p.flush(30) == 0
    got: list[bytes | None] = []
    follower = TopicFollower(s.bootstrap, s.topic("control"), lambda k, v: got.append(v),
                             s.kafka_client_config())
    assert follower.start(30), "the follower did not catch up"
    follower.stop()
    assert got == [b"over-" + s.kafka.security_protocol.encode()]


def refused(config: dict[str, Any]) -> bool:
    try:
        AdminClient(config).list_topics(timeout=4)  # loopback: a refusal comes in milliseconds
    except KafkaException:
        return True
    return False


def test_sasl_ssl_scram_and_mtls_for_the_confluent_clients(secured: SecuredBroker, tmp_path: Path) -> None:
    scram = settings_for(secured.sasl_port, scram_env(secured, tmp_path / "pw"), tmp_path)
    round_trip(scram)
    mtls = settings_for(secured.mtls_port, mtls_env(secured), tmp_path)
    round_trip(mtls)
    wrong = {**scram.kafka_client_config(), "sasl.password": "wrong"}
    assert refused(wrong), "a wrong SCRAM password must be refused"
    no_cert = {k: v for k, v in mtls.kafka_client_config().items()
               if not k.startswith(("ssl.cert", "ssl.key"))}
    assert refused(no_cert), "the mTLS listener must refuse a client without a certificate"


def test_aiokafka_with_fausts_credentials_over_mtls(secured: SecuredBroker, tmp_path: Path) -> None:
    """faust's transport builds aiokafka clients from broker_credentials exactly like this."""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.app.factory import broker_credentials

    s = settings_for(secured.mtls_port, mtls_env(secured), tmp_path)
    create_topics(s)

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap,
                                    **credentials_to_aiokafka_auth(broker_credentials(s)))
        await producer.start()
        try:
            await producer.send_and_wait(s.topic("control"), b"from-aiokafka", key=b"a")
        finally:
            await producer.stop()

    asyncio.run(asyncio.wait_for(send(), 60))


def test_a_worker_runs_entirely_over_sasl_ssl(secured: SecuredBroker, tmp_path: Path) -> None:
    """faust (consumer group, changelog, producer), the admin client and the followers, all on SCRAM."""
    env = scram_env(secured, tmp_path / "pw")
    s = settings_for(secured.sasl_port, env, tmp_path)
    create_topics(s)
    worker = WorkerProcess(s, tmp_path / "worker.log", extra_env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert worker.proc.poll() is None, f"worker exited:\n{worker.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready over SASL_SSL:\n{worker.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{s.web_port}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.HTTPError, OSError):
                pass
            time.sleep(0.3)
        p = Producer(s.kafka_client_config())
        p.produce(s.topic("predictions"), key=b"model-x", value=b"\x00not an event")
        assert p.flush(30) == 0
        c = Consumer(s.kafka_client_config({"group.id": f"reader-{uuid.uuid4().hex}",
                                            "auto.offset.reset": "earliest"}))
        c.subscribe([s.topic("deadletter")])
        try:
            letters: list[Any] = []
            end = time.monotonic() + 60
            while not letters and time.monotonic() < end:
                letters = [m for m in c.consume(10, timeout=0.5) if m.error() is None]
        finally:
            c.close()
        assert letters, "the worker consumed and dead-lettered nothing over SASL_SSL"
    finally:
        worker.stop()
