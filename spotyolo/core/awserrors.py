"""Reading an AWS error: one place for botocore's error shape, shared by the Lambdas and the trainer."""

from __future__ import annotations

from botocore.exceptions import ClientError

#: what S3 answers for a key that is not there (HeadObject says 404, GetObject NoSuchKey)
MISSING_OBJECT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def error_code(err: ClientError) -> str:
    """The error's code (``""`` when the response names none)."""
    return str(err.response.get("Error", {}).get("Code", ""))
