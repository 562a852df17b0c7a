"""Real servers for the storage tests: the GCS emulator and moto's S3 server as child processes on
loopback ports, and a throwaway service account key so that V4 URL signing works offline."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.storage_service.storage_servers import (
    GCS_BUCKET,
    S3_BUCKET,
    ServiceAccount,
    answers,
    child_process,
    free_port,
    s3_client,
    script,
)


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [
        script("gcp-storage-emulator"),
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
        "--in-memory",
        f"--default-bucket={GCS_BUCKET}",
        "--quiet",
    ]
    with child_process(command, ready=lambda: answers(f"{endpoint}/"), what="GCS emulator"):
        yield endpoint


@pytest.fixture(scope="session")
def gcs_service_account(tmp_path_factory: pytest.TempPathFactory) -> ServiceAccount:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = "storage-test@alerts-test.iam.gserviceaccount.com"
    key_file = {
        "type": "service_account",
        "project_id": "alerts-test",
        "private_key_id": "test-key-1",
        "private_key": private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "client_email": email,
        "client_id": "1",
        # Never contacted: with an emulator endpoint, API calls are anonymous.
        "token_uri": "http://127.0.0.1:9/token",
    }
    path = tmp_path_factory.mktemp("gcs") / "service-account.json"
    path.write_text(json.dumps(key_file))
    return ServiceAccount(path=path, public_key=private_key.public_key(), email=email)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = [script("moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with child_process(command, ready=lambda: answers(f"{endpoint}/moto-api/"), what="moto S3 server"):
        s3_client(endpoint).create_bucket(Bucket=S3_BUCKET)
        yield endpoint
