"""The Bedrock signer: static keys, the AWS credential chain, STS AssumeRole (against the fake
STS), early refresh in the background, and a clear error when there are no credentials."""

from __future__ import annotations

import pytest

from dataplane.config.aws import REFRESH_MARGIN_S, AwsCredentialsError, AwsSigner
from dataplane.http.server import serve_http
from dataplane.testing.fake_bedrock import (
    TEST_ACCESS_KEY_ID,
    TEST_SECRET_ACCESS_KEY,
    FakeBedrock,
)

URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse"
ROLE = "arn:aws:iam::123456789012:role/r"


@pytest.fixture
def no_aws_environment(monkeypatch, tmp_path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    # No instance-metadata or container lookups from a test.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)


def _headers(signed: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in signed}


async def test_static_keys_sign_host_and_date() -> None:
    signer = AwsSigner(
        region="us-east-1",
        access_key_id=TEST_ACCESS_KEY_ID,
        secret_access_key=TEST_SECRET_ACCESS_KEY,
    )
    headers = _headers(await signer.sign("POST", URL, b"{}"))
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={TEST_ACCESS_KEY_ID}/")
    assert (
        "/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date,"
        in headers["authorization"]
    )
    assert set(headers) == {"authorization", "x-amz-date"}
    await signer.sign("POST", URL, b"{}")
    assert signer.resolutions == 1  # static keys never expire: resolved once


async def test_credential_chain_when_no_keys_are_configured(
    no_aws_environment, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    headers = _headers(await AwsSigner(region="eu-west-1").sign("POST", URL, b"{}"))
    assert "Credential=AKIAFROMENVIRONMENT0/" in headers["authorization"]
    assert headers["x-amz-security-token"] == "env-token"


async def test_no_credentials_anywhere_is_a_clear_error(no_aws_environment) -> None:
    with pytest.raises(AwsCredentialsError, match="no AWS credentials"):
        await AwsSigner(region="eu-west-1").sign("POST", URL, b"{}")


async def test_assume_role_is_cached_then_refreshed_early_in_the_background() -> None:
    # Credentials that live less than the refresh margin: every use after the first finds
    # them "expiring soon" and refreshes them in the background, still signing meanwhile.
    fake = FakeBedrock(sts_duration_s=int(REFRESH_MARGIN_S) + 60)
    async with serve_http(fake) as sts:
        signer = AwsSigner(
            region="us-east-1",
            access_key_id=TEST_ACCESS_KEY_ID,
            secret_access_key=TEST_SECRET_ACCESS_KEY,
            assume_role_arn=ROLE,
            sts_endpoint_url=sts.url,
        )
        first = _headers(await signer.sign("POST", URL, b"{}"))
        second = _headers(await signer.sign("POST", URL, b"{}"))
        assert fake.assumed_roles == [(ROLE, "meterline")]
        assert first["x-amz-security-token"] == second["x-amz-security-token"]

        fake.sts_duration_s = 60  # the next credentials are already inside the margin
        signer.invalidate()
        await signer.sign("POST", URL, b"{}")
        assert len(fake.assumed_roles) == 2
        third = _headers(await signer.sign("POST", URL, b"{}"))  # signs at once...
        assert third["x-amz-security-token"].startswith("FwoG")
        assert signer._refreshing is not None
        await signer._refreshing  # ...while the refresh runs in a worker thread
        assert len(fake.assumed_roles) == 3


async def test_sts_refusal_is_a_credentials_error() -> None:
    fake = FakeBedrock()
    async with serve_http(fake) as sts:
        signer = AwsSigner(
            region="us-east-1",
            access_key_id=TEST_ACCESS_KEY_ID,
            secret_access_key="wrong",
            assume_role_arn=ROLE,
            sts_endpoint_url=sts.url,
        )
        with pytest.raises(AwsCredentialsError, match=r"STS AssumeRole of \S+ failed: ClientError"):
            await signer.sign("POST", URL, b"{}")
    assert fake.assumed_roles == []
