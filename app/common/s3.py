"""S3 access shared by the model store and, later, the offline feature store.

boto3 already honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 for any
S3-compatible server (MinIO, SeaweedFS, Ceph); an explicit endpoint wins.
Credentials come from boto3's usual chain: env, IRSA web identity, instance role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``("bucket", "some/prefix")``."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URL with a bucket: {url!r}")
    return parsed.netloc, parsed.path.strip("/")


def s3_client(endpoint_url: str | None = None, region: str | None = None) -> S3Client:
    # boto3 is slow to import (docs/design.md); jobs that never touch S3 should not pay it.
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {
        "config": Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
    }
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if region:
        kwargs["region_name"] = region
    client: S3Client = boto3.session.Session().client("s3", **kwargs)
    return client
