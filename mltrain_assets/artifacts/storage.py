"""Reaching the store: fsspec filesystems with bounded waits on S3, and exclusive (create-only) writes."""

from __future__ import annotations

import os
import uuid
from typing import Any

import fsspec

# Every object-store call has a bounded wait: botocore's own retries (3 attempts, standard mode),
# a connect and a read timeout, and no second retry loop in s3fs. A dead endpoint fails in seconds,
# one that accepts and never answers in about a minute (README "Failure modes").
S3_ATTEMPTS = 3
S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 20


class StorageUnavailable(OSError):
    """The object store did not answer within its bounded retries; the message names the endpoint and the call."""


def s3_endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""


def storage_options_for(uri: str) -> dict[str, Any]:
    """fsspec options for ``uri``: bounded waits; S3-compatible endpoints come from ``AWS_ENDPOINT_URL``."""
    if uri.startswith(("s3://", "s3a://")):
        options: dict[str, Any] = {
            "config_kwargs": {
                "connect_timeout": S3_CONNECT_TIMEOUT_S,
                "read_timeout": S3_READ_TIMEOUT_S,
                "retries": {"max_attempts": S3_ATTEMPTS, "mode": "standard"},  # a fresh dict: botocore edits it
            }
        }
        if s3_endpoint():
            options["client_kwargs"] = {"endpoint_url": s3_endpoint()}
        return options
    return {}


def _unreachable(uri: str, what: str, error: Exception) -> StorageUnavailable:
    endpoint = s3_endpoint() or "AWS S3"
    return StorageUnavailable(
        f"object store {endpoint} unreachable after {S3_ATTEMPTS} attempts ({what} {uri}): {error}"
    )


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and the protocol-less path for ``uri`` (``file://`` and ``s3://``)."""
    if uri.startswith("s3a://"):
        uri = "s3://" + uri[len("s3a://") :]
    fs, path = fsspec.core.url_to_fs(uri, **storage_options_for(uri))
    if hasattr(fs, "retries"):
        fs.retries = 1  # s3fs would repeat botocore's 3 attempts 5 times over: one budget, botocore's
    return fs, path


def _is_connection_error(error: BaseException | None) -> bool:
    """botocore's connection and timeout errors, however s3fs wraps them."""
    while error is not None:
        module = type(error).__module__
        if module.startswith(("botocore", "aiobotocore")) and any(
            word in type(error).__name__ for word in ("Connect", "Timeout", "Endpoint")
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol or ())
    return bool({"file", "local"} & set(protocols))


def _create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write ``path`` whole, only if it does not exist (atomically); ``False`` if it did."""
    if _is_local(fs):
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        try:
            os.link(tmp, path)  # atomic and never replaces: a reader sees the whole file or none
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    try:
        fs.pipe_file(path, data, mode="create")  # S3: a conditional PUT (If-None-Match: *)
    except FileExistsError:
        return False
    except OSError as error:
        if "PreconditionFailed" in str(error) or "412" in str(error):
            return False
        raise
    return True
