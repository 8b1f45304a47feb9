"""Audio and model constants of S3Gen, shared by the export side and the runtime."""

SAMPLE_RATE = 24000          # output waveform, Hz
TOKEN_RATE = 25              # speech tokens per second
MEL_RATE = 50                # mel frames per second
TOKEN_MEL_RATIO = 2          # mel frames per speech token
SAMPLES_PER_FRAME = SAMPLE_RATE // MEL_RATE   # 480: the vocoder's upsampling factor
SPEECH_VOCAB_SIZE = 6561     # valid token ids are [0, 6561)
MEL_BINS = 80
SPEAKER_EMBED_DIM = 192      # x-vector given with a voice
N_HARMONICS = 9              # sine source: fundamental + 8 overtones
MAX_MEL_FRAMES = 5000        # the encoder's relative positional table: T = 2 * (P + N) <= 5000
TRIM_FADE_SAMPLES = 2 * (SAMPLE_RATE // 50)   # 20 ms of zeros then a 20 ms raised cosine
DEFAULT_CFG_RATE = 0.7
# Upper limits on a request: far above any useful setting, low enough that one request cannot hold a
# server for hours (steps) or push the guided velocity far outside what the estimator was trained on.
MAX_STEPS = 1000
MAX_CFG_RATE = 10.0
DEFAULT_STEPS = {"standard": 10, "meanflow": 2}
VARIANTS = ("standard", "meanflow")
