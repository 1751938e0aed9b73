"""Credentials kept out of everything this package writes: run notes, tags, warnings, error messages, the saved
LightningCLI config.

Two sources: the password (or token) inside a URI's user information (`http://alice:s3cret@host`, also a database
URI such as `postgresql://user:pw@db/mlflow`) and in query parameters (`?token=...`), and the values of the
environment variables MLflow and the artifact stores read credentials from (`SECRET_VARIABLES`).

    >>> redact("cannot reach http://alice:s3cret@mlflow.example:5000/api", env={})
    'cannot reach http://alice:***@mlflow.example:5000/api'
    >>> redact("uri postgresql://bob:pw@db/mlflow?password=x&sslmode=require", env={})
    'uri postgresql://bob:***@db/mlflow?password=***&sslmode=require'
    >>> redact("token abc123xyz sent", env={"MLFLOW_TRACKING_TOKEN": "abc123xyz"})
    'token *** sent'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SECRET_VARIABLES = (
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET",
)
MIN_SECRET_LENGTH = 3  # shorter values would blank ordinary words
MASK = "***"

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@\s:?#]*):(?P<password>[^/@\s?#]*)@")
_QUERY = re.compile(
    r"(?P<key>(?:password|passwd|pwd|token|secret|api_key|apikey|access_key|sig)=)(?P<value>[^&\s'\"]+)", re.IGNORECASE
)


URL_PRINTING_VARIABLE = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def has_password(uri) -> bool:
    """Whether `uri` carries a password in its user information (`scheme://user:password@host`)."""
    return isinstance(uri, str) and _USERINFO.search(uri) is not None


def keep_uri_out_of_output(uri, env=None) -> bool:
    """When `uri` carries a password, stop MLflow from printing run links (built from the URI, password and all)
    to stdout when a run ends, by setting `URL_PRINTING_VARIABLE` unless the user set it; returns whether it did."""
    env = os.environ if env is None else env
    if has_password(uri) and URL_PRINTING_VARIABLE not in env:
        env[URL_PRINTING_VARIABLE] = "true"
        return True
    return False


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with URI passwords, credential query parameters and the values of `SECRET_VARIABLES` (from `env`,
    default the process environment) replaced by ``***``."""
    if not isinstance(text, str) or not text:
        return text
    env = os.environ if env is None else env
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
    for name in SECRET_VARIABLES:
        value = env.get(name)
        if value and len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, MASK)
    return text
