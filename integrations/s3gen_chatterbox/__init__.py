"""S3Gen from artifacts inside upstream Chatterbox: `install(tts, artifacts)` replaces `tts.s3gen` with a
drop-in that keeps upstream's call contract (inference, flow_inference, hift_inference, embed_ref, tokenizer,
device, dtype) and upstream's random draws, so a seeded request gives upstream's mel.

It imports torch, as its caller's TTS object already does, so it lives beside the runtime (s3gen_runtime,
which never imports torch) rather than in it.
"""
from .drop_in import S3GenDropIn
from .install import SUPPORTED_VERSIONS, UnsupportedUpstream, install, upstream_version
from .timing import generate_timed
from .tokenizer import S3TokenizerDropIn

__all__ = ["S3GenDropIn", "S3TokenizerDropIn", "SUPPORTED_VERSIONS", "UnsupportedUpstream", "generate_timed",
           "install", "upstream_version"]
