"""ONNX Runtime on a CUDA GPU, with IO binding: inputs and outputs live in device OrtValues.

Same graphs, same checks as the CPU `onnxruntime` backend (it subclasses OnnxRuntimeRunner),
plus:

- the CUDA execution provider must really be active: ONNX Runtime silently falls back to the CPU
  when the CUDA libraries fail to load, and this backend refuses that instead of running slowly;
- `run()` binds every feed as a device OrtValue and every requested output to device memory, then
  copies only the requested outputs back;
- `run_device()` takes OrtValues already on the GPU (or numpy arrays, uploaded) and returns device
  OrtValues: the conditioning can be uploaded once and reused by every solver step.

Needs the onnxruntime-gpu wheel (`pip install 's3gen-aot[gpu]'`), imported lazily.
"""

from __future__ import annotations


import numpy as np

from ..errors import ArtifactError, InputError
from ..manifest import Component, Manifest, verify_file
from .base import check_feeds, check_output_names, expected_metadata, onnx_component
from .onnxruntime import OnnxRuntimeRunner, import_onnxruntime

CUDA_PROVIDER = "CUDAExecutionProvider"
INSTALL_HINT = "pip install 's3gen-aot[gpu]' (onnxruntime-gpu, with CUDA and cuDNN)"


class OnnxRuntimeCudaRunner(OnnxRuntimeRunner):
    """An ONNX graph under ONNX Runtime's CUDA provider, fed through IO binding.

    `device_type="cpu"` runs the same IO-binding code on the CPU provider (used by the tests,
    which have no GPU); every real use is "cuda".
    """

    def __init__(self, path, component: Component, device_id: int = 0, intra_op_threads=None, *,
                 name: str | None = None, expected_metadata: dict | None = None, device_type: str = "cuda"):
        if isinstance(device_id, bool) or not isinstance(device_id, (int, np.integer)) or device_id < 0:
            raise InputError(f"device_id must be an integer >= 0, got {device_id!r}")
        if device_type not in ("cuda", "cpu"):
            raise InputError(f"device_type must be 'cuda' or 'cpu', got {device_type!r}")
        ort = import_onnxruntime()
        if device_type == "cuda":
            available = ort.get_available_providers()
            if CUDA_PROVIDER not in available:
                raise ArtifactError(f"the onnxruntime-cuda backend needs ONNX Runtime with CUDA: {INSTALL_HINT}; "
                                    f"this onnxruntime has {available}")
            providers = [CUDA_PROVIDER, "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        # the CPU arena does not hold the device's buffers: nothing to shrink per run
        super().__init__(path, component, providers, intra_op_threads, name=name, expected_metadata=expected_metadata,
                         arena_shrinkage=False)
        if device_type == "cuda":
            if int(device_id) != 0:
                self._session.set_providers(providers, [{"device_id": str(int(device_id))}, {}])
            if CUDA_PROVIDER not in self._session.get_providers():
                raise ArtifactError(f"{self.name}: ONNX Runtime could not start its CUDA provider (CUDA or cuDNN "
                                    "libraries missing or mismatched?) and would silently run on the CPU; "
                                    f"providers active: {self._session.get_providers()}")
            self.providers = self._session.get_providers()
        self._ortmod = ort
        self.device_type = device_type
        self.device_id = int(device_id)

    def to_device(self, array) -> "object":
        """A numpy array as an OrtValue on this runner's device (keep it to reuse across calls)."""
        return self._ortmod.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device_type,
                                                         self.device_id)

    def _bind(self, feeds: dict, outputs: list[str]):
        binding = self._session.io_binding()
        keep = []
        for name, value in feeds.items():
            if not isinstance(value, self._ortmod.OrtValue):
                value = self.to_device(value)
            keep.append(value)
            binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, self.device_type, self.device_id)
        return binding, keep

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        binding, keep = self._bind(feeds, outputs)
        self._session.run_with_iobinding(binding)
        values = binding.copy_outputs_to_cpu()
        del keep
        return dict(zip(outputs, values))

    def run_device(self, feeds: dict, outputs=None) -> dict:
        """Feeds: name -> OrtValue (on this device) or numpy array; returns name -> device OrtValue."""
        if not isinstance(feeds, dict):
            raise InputError(f"{self.name}: feeds must be a dict of name -> OrtValue or array")
        proxies = {}
        for name, value in feeds.items():
            if isinstance(value, self._ortmod.OrtValue):
                if value.device_name().lower() != self.device_type:
                    raise InputError(f"{self.name}: input {name!r} is on {value.device_name()}, not "
                                     f"{self.device_type}")
                dtype = _ORT_ELEMENT_DTYPES.get(value.data_type(), None)
                if dtype is None:
                    raise InputError(f"{self.name}: input {name!r} has unsupported type {value.data_type()}")
                proxies[name] = np.broadcast_to(np.zeros((), dtype), tuple(value.shape()))
            else:
                proxies[name] = np.asarray(value)
        check_feeds(self.name, self.component, proxies)
        names = check_output_names(self.name, self.component, outputs)
        binding, keep = self._bind(feeds, names)
        self._session.run_with_iobinding(binding)
        values = binding.get_outputs()
        del keep
        return dict(zip(names, values))


_ORT_ELEMENT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def open_onnxruntime_cuda(folder, manifest: Manifest, component_name: str, **options) -> OnnxRuntimeCudaRunner:
    """Registry factory: `component_name` of the artifact folder on ONNX Runtime's CUDA provider."""
    component = onnx_component(manifest, component_name, "onnxruntime-cuda", options, {"device_id", "intra_op_threads"})
    path = verify_file(folder, f"components.{component_name}", component.file, component.sha256)
    return OnnxRuntimeCudaRunner(path, component, name=component_name,
                                 expected_metadata=expected_metadata(manifest, component_name), **options)


__all__ = ["OnnxRuntimeCudaRunner", "open_onnxruntime_cuda"]
