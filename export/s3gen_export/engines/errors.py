"""The engine build's own error."""
from __future__ import annotations

from s3gen_runtime.errors import S3GenError


class EngineBuildError(S3GenError):
    """An engine could not be built, or missed its tolerances (the CLI exits non-zero)."""
