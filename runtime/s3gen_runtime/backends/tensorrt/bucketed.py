"""Every engine of one graph at one precision behind one runner, and the registry factory.

`BucketedTensorRTRunner` sends each call to the engine of the smallest bucket that holds it
(`select_engine`) and deserialises that engine on first use. `open_tensorrt` is the factory the
backend registry (`backends.open_runner(..., backend="tensorrt")`) calls.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ...errors import ArtifactError, InputError
from ...manifest import Engine, Manifest
from .. import gpu
from ..base import Runner
from .compat import import_tensorrt
from .runner import TensorRTRunner
from .selection import axis_sizes, bucket_frames, check_precision, engines_for, select_engine


class BucketedTensorRTRunner(Runner):
    """All engines of one graph at one precision; each call goes to the smallest bucket that holds it.

    Engines are checked and deserialised on first use (or all at once with preload=True).
    """

    def __init__(self, folder, manifest: Manifest, component_name: str, engine_precision: str, *,
                 pool_size: int = 2, cuda_graph: bool = False, device: int = 0, preload: bool = False):
        component = manifest.component(component_name)
        super().__init__(component_name, component)
        self.folder = Path(folder)
        self.manifest = manifest
        self.engine_precision = check_precision(engine_precision)
        import_tensorrt()   # fail at open time, not on the first call
        self.device = gpu.require_device(device)
        self.compute_capability = gpu.compute_capability(self.device)
        self.engines = engines_for(manifest, component_name, engine_precision, self.compute_capability)
        if not self.engines:
            select_engine(manifest, component_name, 1, 1, engine_precision,
                          compute_capability=self.compute_capability, folder=self.folder)   # raises the message
        self._options = {"pool_size": pool_size, "cuda_graph": cuda_graph, "device": self.device}
        self._runners: dict[str, TensorRTRunner] = {}
        self._lock = threading.Lock()
        if preload:
            for e in self.engines:
                self._runner(e)

    def _runner(self, engine: Engine) -> TensorRTRunner:
        with self._lock:
            runner = self._runners.get(engine.file)
            if runner is None:
                runner = TensorRTRunner(self.folder, engine, self.component, name=self.name, **self._options)
                self._runners[engine.file] = runner
            return runner

    def engine_for(self, shapes: dict) -> Engine:
        axes = axis_sizes(self.component, shapes)
        return select_engine(self.manifest, self.name, bucket_frames(axes), axes.get("batch", 1),
                             self.engine_precision, compute_capability=self.compute_capability, folder=self.folder)

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        engine = self.engine_for({n: a.shape for n, a in feeds.items()})
        return self._runner(engine)._run(feeds, outputs)

    def run_device(self, feeds: dict, outputs=None) -> dict:
        shapes = {n: tuple(v.shape) for n, v in feeds.items()}
        missing = [s.name for s in self.component.inputs if s.name not in shapes]
        if missing:
            raise InputError(f"{self.name}: missing inputs {missing}")
        return self._runner(self.engine_for(shapes)).run_device(feeds, outputs)

    def close(self) -> None:
        with self._lock:
            for r in self._runners.values():
                r.close()
            self._runners.clear()


def open_tensorrt(folder, manifest: Manifest, component_name: str, engine_precision: str | None = None,
                  pool_size: int = 2, cuda_graph: bool = False, device: int = 0,
                  preload: bool = False) -> BucketedTensorRTRunner:
    """Registry factory: the TensorRT runner for one component of the artifact folder.

    engine_precision None takes the only precision built for this graph (fp16 first when several).
    """
    if engine_precision is None:
        have = {e.precision for e in manifest.engines if e.graph == component_name}
        for p in ("fp16", "bf16", "fp32"):
            if p in have:
                engine_precision = p
                break
        else:
            raise ArtifactError(f"no TensorRT engines for {component_name!r} in {folder}; build them: "
                                f"s3gen-aot build-engines {folder} --precision fp16")
    return BucketedTensorRTRunner(folder, manifest, component_name, engine_precision, pool_size=pool_size,
                                  cuda_graph=cuda_graph, device=device, preload=preload)

