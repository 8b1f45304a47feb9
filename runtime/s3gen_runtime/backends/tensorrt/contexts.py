"""One execution context of an engine with its own CUDA stream, device buffers and CUDA graph."""

from __future__ import annotations

from ...errors import ArtifactError
from .. import gpu


class ExecutionSlot:
    """One execution context with its own stream, device buffers and captured CUDA graphs."""

    def __init__(self, engine, use_graphs: bool):
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ArtifactError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = gpu.Stream()
        self.buffers: dict = {}
        self.bound: dict = {}
        self.use_graphs = use_graphs
        self.graph = None
        self.last_key = None

    def buffer(self, name: str, nbytes: int) -> int:
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.buffers[name] = gpu.DeviceBuffer(nbytes)
            moved = True
        else:
            moved = buf.ensure(nbytes)
        if moved:
            self.drop_graphs()   # a captured graph holds the old addresses
            self.last_key = None
        return buf.ptr

    def bind(self, name: str, ptr: int) -> None:
        if self.bound.get(name) != ptr:
            if not self.context.set_tensor_address(name, ptr):
                raise ArtifactError(f"TensorRT refused the address of tensor {name!r}")
            self.bound[name] = ptr

    def execute(self, key) -> None:
        """Run the enqueued shapes. With CUDA graphs: a call whose key (shapes and addresses) equals
        the previous call's is captured once and replayed after that; any other key runs plainly and
        drops the graph. One graph per context, and only for repeated identical calls: TensorRT must
        have run a shape before it is captured, and a context's internal state follows its last shape."""
        if not self.use_graphs or key is None:
            self.last_key = None
            self.drop_graphs()
            self._enqueue_or_fail()
            return
        if key != self.last_key:
            self.drop_graphs()
            self.last_key = key
            self._enqueue_or_fail()
            return
        if self.graph is None:
            self.graph = gpu.CudaGraph(self.stream, lambda: self.context.execute_async_v3(self.stream.ptr))
        self.graph.launch(self.stream)

    def _enqueue_or_fail(self) -> None:
        if not self.context.execute_async_v3(self.stream.ptr):
            raise ArtifactError("TensorRT failed to enqueue the engine (see the TensorRT log above)")

    def drop_graphs(self) -> None:
        if self.graph is not None:
            graph, self.graph = self.graph, None
            graph.close()

    def close(self) -> None:
        self.drop_graphs()
        for buf in self.buffers.values():
            buf.close()
        self.buffers.clear()
        self.stream.close()
        self.context = None

