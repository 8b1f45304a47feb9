"""Export one component spec to an ONNX file (torch.export-based exporter, dynamic named axes)."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import torch
from onnxscript import rewriter
from onnxscript.optimizer import _constant_folding
from torch.export import Dim

from s3gen_runtime.backends.base import METADATA_PREFIX

from ..components.base import ComponentSpec
from ..rewrites.fused_attention import TRANSLATION_TABLE, use_fused_attention
from ..model.encoder import use_head_by_head_attention
from .onnx_scopes import walk_nodes
from ..rewrites.unpadded_attention import branch_unpadded_attention

RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                        "Multinomial", "Bernoulli"})


# onnxscript's rewrite rules that torch.onnx.export(optimize=True) applies, less SlicesSplit: a pattern with two
# output nodes, which the matcher tries against every pair of Slice nodes (quadratic in the graph). On the
# encoder (hundreds of slices from its head-by-head attention) it took ~150 of the ~200 s export and rewrote
# nothing; without it every graph here comes out node for node the same (tests/export/test_onnx_export.py).
SKIPPED_REWRITE_RULES = frozenset({"SlicesSplit"})


def optimize_graph(model: ir.Model) -> None:
    """In place: onnxscript's optimize_ir (what torch's exporter runs with optimize=True) with the rule set
    less SKIPPED_REWRITE_RULES; the same passes in the same order, two iterations."""
    rules = [rule for rule in rewriter._DEFAULT_REWRITE_RULES if getattr(rule, "name", None) not in SKIPPED_REWRITE_RULES]
    fold = _constant_folding.FoldConstantsPass(
        shape_inference=True, input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
        output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT, should_fold=lambda node: None)
    iterate = ir.passes.PassManager([fold, rewriter.RewritePass(rules), common_passes.RemoveUnusedNodesPass(),
                                     common_passes.RemoveUnusedFunctionsPass(), common_passes.RemoveUnusedOpsetsPass()],
                                    steps=2, early_stop=True)
    ir.passes.Sequential(
        common_passes.InlinePass(), iterate, common_passes.RemoveUnusedNodesPass(),
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common_passes.LiftSubgraphInitializersToMainGraphPass(), common_passes.DeduplicateInitializersPass(),
        common_passes.CommonSubexpressionEliminationPass(), common_passes.OutputFixPass(), common_passes.NameFixPass(),
    )(model)


def dynamic_shapes(spec: ComponentSpec) -> dict[str, dict[int, object]]:
    """Named string axes become torch.export Dims; derived axes are a fixed multiple of their base."""
    dims: dict[str, object] = {}

    def dim(axis: str):
        if axis not in dims:
            if axis in spec.derived_axes:
                base, mult = spec.derived_axes[axis]
                dims[axis] = dim(base) * mult
            else:
                dims[axis] = Dim(axis, min=1)
        return dims[axis]

    return {t.name: {i: dim(a) for i, a in enumerate(t.shape) if isinstance(a, str)} for t in spec.inputs}


def example_inputs(spec: ComponentSpec, seed: int = 0) -> dict[str, np.ndarray]:
    return spec.make_inputs(spec.export_case, np.random.default_rng(seed))


@contextlib.contextmanager
def _quiet():
    """The exporter narrates every pass on stdout; our progress lines say what matters."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.getLogger("torch").level
        logging.getLogger("torch").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("torch").setLevel(previous)


def export_component(model: torch.nn.Module, spec: ComponentSpec, path: Path,
                     metadata: dict[str, str] | None = None) -> Path:
    """Export `spec` of the prepared model to `path` (one self-contained .onnx file)."""
    module = spec.build_module(model).eval()
    feeds = example_inputs(spec)
    args = tuple(torch.from_numpy(feeds[name]) for name in spec.input_names)
    path = Path(path)
    use_fused_attention(module, spec.fused_attention)
    use_head_by_head_attention(module, spec.head_by_head_attention)
    try:
        with _quiet(), torch.inference_mode():
            program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=dynamic_shapes(spec),
                                        input_names=spec.input_names, output_names=spec.output_names,
                                        opset_version=spec.opset, optimize=False, verbose=False,
                                        custom_translation_table=TRANSLATION_TABLE)
            optimize_graph(program.model)
    finally:
        use_fused_attention(module, False)   # the model stays the eager reference for validation
        use_head_by_head_attention(module, False)
    proto = program.model_proto
    if spec.fused_attention:   # unpadded batches take ORT's mask-free flash attention
        proto, _ = branch_unpadded_attention(proto)
    set_metadata(proto, {"component": spec.name, "spec_hash": spec.spec_hash(), **(metadata or {})})
    onnx.save_model(proto, str(path))
    return path


def set_metadata(proto: onnx.ModelProto, values: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in values.items():
        full = METADATA_PREFIX + key
        if full in existing:
            existing[full].value = str(value)
        else:
            proto.metadata_props.add(key=full, value=str(value))


def read_metadata(path: Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key[len(METADATA_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}


def random_ops(path: Path) -> list[str]:
    """Random-number ops anywhere in the graph (subgraphs and functions included)."""
    proto = onnx.load(str(path), load_external_data=False)
    found = [f"{node.op_type}:{node.name}" for node in walk_nodes(proto.graph.node) if node.op_type in RANDOM_OPS]
    for fn in proto.functions:
        found += [f"{node.op_type}:{fn.name}/{node.name}" for node in walk_nodes(fn.node) if node.op_type in RANDOM_OPS]
    return found
