"""Exception hierarchy of the runtime.

Callers catch `S3GenError` for anything this package raises on purpose. Bad user
input is also a `ValueError`, so generic input handling keeps working; artifact
problems are not, because the fix there is a re-export or a rebuild, not new input.
"""


class S3GenError(Exception):
    """Base class of every error the runtime raises deliberately."""


class InputError(S3GenError, ValueError):
    """Bad user input: tokens, voices, noise, shapes, dtypes, NaN/Inf."""


class BucketError(InputError):
    """The request is longer than the largest bucket; the message names both lengths."""


class ArtifactError(S3GenError):
    """A missing, tampered or corrupt artifact file."""


class ManifestError(ArtifactError):
    """manifest.json is not one this runtime understands (version, keys, types)."""


class EngineMismatchError(ArtifactError):
    """A TensorRT engine built for another GPU or TensorRT version: rebuild it here."""
