"""Mutual TLS between the services (ALERTS_GRPC_TLS_CERT/KEY/CA) through real processes: storage, signal and
edge speak it to each other with certificates this test issues, a webhook goes through, and callers
without a certificate the CA signed are refused."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from alerts.processes import ManagedProcess, alerts_argv, free_port, http_ok
from apidevs.alerts.v1 import user_service_pb2_grpc
from mesh.grpc import GrpcTls, open_channel
from tests.e2e.stacks import START_TIMEOUT_SECONDS, child_env
from tests.keys import with_service_key
from tests.support import SAMPLE, create_user

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    ca: Path

    def tls(self) -> GrpcTls:
        return GrpcTls(self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue_authority(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def issue_leaf(
    directory: Path, name: str, authority: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]
) -> Issued:
    """A certificate for both ends of a call (server and client auth), valid for loopback."""
    ca_key, ca_cert, ca_path = authority
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Issued(cert_path, key_path, ca_path)


def tls_serving(address: str, issued: Issued) -> bool:
    tls = issued.tls()
    with grpc.secure_channel(address, tls.channel_credentials()) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class MtlsStack:
    edge_url: str
    signal_addr: str
    platform: Issued
    stranger: Issued


@pytest.fixture(scope="module")
def mtls_stack(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[MtlsStack]:
    certs = tmp_path_factory.mktemp("certs")
    authority = issue_authority(certs, "alerts-ca")
    issued = {name: issue_leaf(certs, name, authority) for name in ("storage", "signal", "edge", "platform")}
    stranger = issue_leaf(certs, "stranger", issue_authority(certs, "other-ca"))
    log_dir = tmp_path_factory.mktemp("mtls-stack")
    signal_addr = f"127.0.0.1:{free_port()}"
    storage_addr = f"127.0.0.1:{free_port()}"
    edge_port = free_port()
    base = child_env(
        service_env,
        ALERTS_SIGNAL_ADDR=signal_addr,
        ALERTS_STORAGE_ADDR=storage_addr,
        ALERTS_STORAGE_LOCAL_DIR=str(log_dir / "objects"),
        ALERTS_EDGE_HOST="127.0.0.1",
        ALERTS_EDGE_PORT=str(edge_port),
    )
    edge_url = f"http://127.0.0.1:{edge_port}"
    processes = []
    for name, ready in (
        ("storage", lambda: tls_serving(storage_addr, issued["platform"])),
        ("signal", lambda: tls_serving(signal_addr, issued["platform"])),
        ("edge", lambda: http_ok(f"{edge_url}/health/ready")),
    ):
        tls_files = {
            "ALERTS_GRPC_TLS_CERT": str(issued[name].cert),
            "ALERTS_GRPC_TLS_KEY": str(issued[name].key),
            "ALERTS_GRPC_TLS_CA": str(issued[name].ca),
        }
        env = with_service_key(base | tls_files, name)
        log_path = log_dir / f"{name}.log"
        process = ManagedProcess(name, alerts_argv("serve", name), env, ready=ready, log_path=log_path)
        processes.append(process)
    try:
        for process in processes:
            process.start()
            process.wait_ready(START_TIMEOUT_SECONDS)
        yield MtlsStack(edge_url, signal_addr, issued["platform"], stranger)
    finally:
        for process in reversed(processes):
            process.stop()


async def test_a_webhook_crosses_edge_signal_and_storage_over_mutual_tls(
    mtls_stack: MtlsStack, service_key: str
) -> None:
    async with open_channel(mtls_stack.signal_addr, service_key, tls=mtls_stack.platform.tls()) as channel:
        created = await create_user(user_service_pb2_grpc.UserServiceStub(channel))
    async with httpx.AsyncClient(base_url=mtls_stack.edge_url, timeout=10) as client:
        answer = await client.post(f"/webhook/u/{created.webhook_token}", content=SAMPLE)
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True


async def test_a_plaintext_caller_is_refused(mtls_stack: MtlsStack, service_key: str) -> None:
    async with open_channel(mtls_stack.signal_addr, service_key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await create_user(user_service_pb2_grpc.UserServiceStub(channel))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_caller_whose_certificate_another_ca_signed_is_refused(
    mtls_stack: MtlsStack, service_key: str
) -> None:
    # The caller trusts the services' CA, so only the server's check of the client certificate can refuse.
    stranger = GrpcTls(
        mtls_stack.stranger.cert.read_bytes(),
        mtls_stack.stranger.key.read_bytes(),
        mtls_stack.platform.ca.read_bytes(),
    )
    async with open_channel(mtls_stack.signal_addr, service_key, tls=stranger) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await create_user(user_service_pb2_grpc.UserServiceStub(channel))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_caller_without_a_client_certificate_is_refused(mtls_stack: MtlsStack) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=mtls_stack.platform.ca.read_bytes())
    with (
        grpc.secure_channel(mtls_stack.signal_addr, credentials) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
