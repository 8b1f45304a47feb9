import os
import subprocess
import sys
from pathlib import Path

from s3gen_runtime.errors import (
    ArtifactError,
    BucketError,
    EngineMismatchError,
    InputError,
    ManifestError,
    S3GenError,
)

RUNTIME_DIR = Path(__file__).resolve().parents[2] / "runtime"


def test_hierarchy():
    assert issubclass(InputError, S3GenError) and issubclass(InputError, ValueError)
    assert issubclass(BucketError, InputError)
    assert issubclass(ArtifactError, S3GenError) and not issubclass(ArtifactError, ValueError)
    assert issubclass(ManifestError, ArtifactError)
    assert issubclass(EngineMismatchError, ArtifactError)


def test_core_modules_never_import_torch():
    """The runtime is torch-free: importing every core module must not pull torch in."""
    code = (
        "import sys\n"
        "import s3gen_runtime.errors, s3gen_runtime.io, s3gen_runtime.voice, s3gen_runtime.solvers\n"
        "import s3gen_runtime.noise, s3gen_runtime.buckets, s3gen_runtime.manifest\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 's3gen_export'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(RUNTIME_DIR)})
