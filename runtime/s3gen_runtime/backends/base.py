"""The one interface every inference backend implements, and the checks they all share.

A `Runner` runs one exported graph. Feeds are checked against the manifest's record of
that graph (names, dtypes, ranks, fixed sizes, named axes) before anything runs, so a
bad call fails with an InputError naming the tensor rather than deep inside a backend.
Backends implement `_run` only; `run` does the checking.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import ArtifactError, InputError
from ..manifest import Component, Manifest

METADATA_PREFIX = "s3gen."
INT8_SUFFIX = "_int8"


def base_name(component_name: str) -> str:
    """'estimator_int8' -> 'estimator': a quantized graph implements its fp32 graph's spec."""
    if component_name.endswith(INT8_SUFFIX):
        return component_name[: -len(INT8_SUFFIX)]
    return component_name


def expected_metadata(manifest: Manifest, component_name: str) -> dict[str, tuple[str, ...]]:
    """metadata_props key -> accepted values for the graph the manifest calls `component_name`.

    A graph copied in from another export (other checkpoint, variant or spec) has the right
    file name but the wrong metadata; the sha256 in the manifest alone cannot catch a manifest
    that was edited to match it.
    """
    component = manifest.component(component_name)
    names = tuple(dict.fromkeys((component_name, base_name(component_name))))
    return {
        METADATA_PREFIX + "component": names,
        METADATA_PREFIX + "spec_hash": (component.spec_hash,),
        METADATA_PREFIX + "variant": (manifest.checkpoint.variant,),
        METADATA_PREFIX + "checkpoint_sha256": (manifest.checkpoint.sha256,),
        METADATA_PREFIX + "precision": (component.precision,),
    }


def onnx_component(manifest: Manifest, component_name: str, backend: str, options: dict,
                   known: set[str]) -> Component:
    """The manifest record of an ONNX component, after refusing options `backend` does not take."""
    component = manifest.component(component_name)
    if component.format != "onnx":
        raise ArtifactError(f"{component_name}: format {component.format!r} cannot run under ONNX Runtime")
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown {backend} backend option(s) {unknown}; known: {sorted(known)}")
    return component


def check_metadata(where: str, found: dict[str, str], expected: dict[str, tuple[str, ...]]) -> None:
    """ArtifactError naming every key whose value is missing or not an accepted one."""
    problems = []
    for key, accepted in expected.items():
        value = found.get(key)
        if value not in accepted:
            want = accepted[0] if len(accepted) == 1 else " or ".join(accepted)
            problems.append(f"{key} is {value!r}, the manifest expects {want!r}")
    if problems:
        raise ArtifactError(f"{where}: graph metadata does not match the manifest: " + "; ".join(problems)
                            + "; re-export the artifacts")


def check_graph_io(where: str, component: Component, graph_inputs, graph_outputs) -> None:
    """The graph's (name, dtype, rank) lists must equal the manifest's, in order.

    Graph dims are only compared where both sides give a fixed size: exporters name
    dynamic axes their own way ('2*prompt_tokens'), which carries no contract.
    """
    for kind, specs, graph in (("inputs", component.inputs, graph_inputs), ("outputs", component.outputs, graph_outputs)):
        want = [s.name for s in specs]
        got = [g[0] for g in graph]
        if got != want:
            raise ArtifactError(f"{where}: graph {kind} are {got} but the manifest records {want}")
        for spec, (name, dtype, shape) in zip(specs, graph):
            if dtype != spec.dtype:
                raise ArtifactError(f"{where}: {kind[:-1]} {name!r} is {dtype} in the graph but {spec.dtype} "
                                    "in the manifest")
            if shape is not None and len(shape) != len(spec.shape):
                raise ArtifactError(f"{where}: {kind[:-1]} {name!r} has rank {len(shape)} in the graph but "
                                    f"{len(spec.shape)} in the manifest")
            for axis, (g, s) in enumerate(zip(shape or (), spec.shape)):
                if isinstance(g, int) and isinstance(s, int) and g != s:
                    raise ArtifactError(f"{where}: {kind[:-1]} {name!r} axis {axis} is {g} in the graph but {s} "
                                        "in the manifest")


def check_feeds(where: str, component: Component, feeds: dict) -> dict[str, np.ndarray]:
    """Feeds as arrays, checked: exact names, dtypes, ranks, fixed sizes, consistent named axes."""
    if not isinstance(feeds, dict):
        raise InputError(f"{where}: feeds must be a dict of name -> array, got {type(feeds).__name__}")
    want = [s.name for s in component.inputs]
    missing = [n for n in want if n not in feeds]
    unknown = [n for n in feeds if n not in want]
    if missing or unknown:
        raise InputError(f"{where}: feeds must be exactly {want}; missing {missing}, unknown {unknown}")
    arrays, axes = {}, {}
    for spec in component.inputs:
        a = np.asarray(feeds[spec.name])
        if a.dtype != np.dtype(spec.dtype):
            raise InputError(f"{where}: input {spec.name!r} must be {spec.dtype}, got {a.dtype}")
        if a.ndim != len(spec.shape):
            raise InputError(f"{where}: input {spec.name!r} must have rank {len(spec.shape)} "
                             f"(shape {list(spec.shape)}), got shape {a.shape}")
        for axis, (size, dim) in enumerate(zip(a.shape, spec.shape)):
            if size < 1:
                raise InputError(f"{where}: input {spec.name!r} axis {axis} is empty (shape {a.shape})")
            if isinstance(dim, int) and size != dim:
                raise InputError(f"{where}: input {spec.name!r} axis {axis} must be {dim}, got shape {a.shape}")
            if isinstance(dim, str):
                seen = axes.setdefault(dim, (size, spec.name))
                if seen[0] != size:
                    raise InputError(f"{where}: axis {dim!r} is {seen[0]} in {seen[1]!r} but {size} in "
                                     f"{spec.name!r}")
        arrays[spec.name] = np.ascontiguousarray(a)   # backends read raw buffers; a slice is a view
    return arrays


def check_output_names(where: str, component: Component, outputs) -> list[str]:
    """The requested outputs (all when None); unknown names are an InputError."""
    names = [s.name for s in component.outputs]
    if outputs is None:
        return names
    outputs = list(outputs)
    unknown = [n for n in outputs if n not in names]
    if unknown or not outputs:
        raise InputError(f"{where}: requested outputs {outputs}; this graph has {names}")
    return outputs


class Runner(ABC):
    """Runs one graph. `run` is safe to call from several threads at once."""

    def __init__(self, name: str, component: Component):
        self.name = name
        self.component = component

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.component.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.component.outputs]

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Check the feeds against the manifest, run, return the requested outputs by name."""
        arrays = check_feeds(self.name, self.component, feeds)
        names = check_output_names(self.name, self.component, outputs)
        return self._run(arrays, names)

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run checked feeds; return {name: array} for `outputs`."""
