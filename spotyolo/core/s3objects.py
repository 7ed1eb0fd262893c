"""Small S3 helpers every side shares (Lambdas and the trainer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from spotyolo.core.awserrors import MISSING_OBJECT_CODES, error_code

if TYPE_CHECKING:  # the stubs are a development dependency: not in the Lambda asset or the image
    from mypy_boto3_s3 import S3Client


def object_exists(s3: S3Client, bucket: str, key: str) -> bool:
    """True when ``key`` exists; any error other than "not found" is raised."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if error_code(err) in MISSING_OBJECT_CODES:
            return False
        raise
    return True
