"""The `s3gen` model of a generated Triton repository (Python backend), run by a stock tritonserver.

`s3gen-aot triton-repo` copies this file to REPO/s3gen/1/model.py. The Python backend's stub loads it;
it imports this package from the paths in the config's `python_path` parameter (the environment
that generated the repository), opens the artifacts named in `artifacts`, and warms up in initialize,
so the model is ready only once it can serve. Unlike PyTriton, the backend answers each request of a
batch separately: a bad request gets its own INVALID_ARG error (HTTP 400), the others their wavs.
"""

import json
import os
import sys

import numpy as np


def _parameters(model_config: dict) -> dict:
    return {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    def initialize(self, args):
        params = _parameters(json.loads(args["model_config"]))
        for path in reversed(params.get("python_path", "").split(os.pathsep)):
            if path and path not in sys.path:
                sys.path.insert(0, path)
        from s3gen_runtime.pipeline import S3GenRuntime
        from s3gen_runtime.serving.model import S3GenModel

        threads = int(params.get("threads", "0"))
        options = {"intra_op_threads": threads} if threads > 0 else {}
        runtime = S3GenRuntime(params["artifacts"], backend=params.get("backend", "onnxruntime"),
                               precision=params.get("precision", "fp32"), **options)
        self.model = S3GenModel(runtime)
        self.model.warm_up()

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        from s3gen_runtime.serving.protocol import INPUTS, ClientError

        inputs = []
        for request in requests:
            arrays = {}
            for spec in INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                if tensor is not None:
                    arrays[spec.name] = tensor.as_numpy()
            inputs.append(arrays)
        responses = []
        for outcome in self.model.run_each(inputs):
            if isinstance(outcome, ClientError):
                error = pb_utils.TritonError(str(outcome), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                # owning copies: a Tensor made from a view (wav[None]) is sent with its size unset
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, np.array(value, order="C")) for name, value in outcome.items()]))
        return responses
