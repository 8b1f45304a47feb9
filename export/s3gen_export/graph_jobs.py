"""One graph's export stage as a job: export -> validate against eager (-> int8, validated) into a folder.

Graphs are independent, so `run_jobs` runs them in worker processes side by side (each loads its own
copy of the prepared model once and takes an equal share of the cores), or in this process for one worker.
A job names its graph by spec name and carries only paths and settings, so it pickles; the worker looks the
spec up again for the checkpoint's variant.
"""
from __future__ import annotations

import base64
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .components import ComponentSpec, specs_for_variant
from .stages.graphs import ExportedGraph, ExportError
from .stages.onnx_export import export_component
from .stages.validate import ValidationReport, set_session_threads, validate_component

Progress = Callable[[str], None]
# What one export worker holds at its peak (the prepared model plus one graph's trace and file): peak RSS of a
# worker on one graph measured 2.5 GiB (encoder), 3.3 (estimator_cfg), 3.5 (tokenizer). Workers beyond the
# free memory would swap.
WORKER_MEMORY_BYTES = 4 << 30


@dataclass(frozen=True)
class GraphJob:
    checkpoint: Path
    spec_name: str
    folder: Path                   # where the graph file(s) go
    metadata: dict                 # the graph file's metadata_props (variant, checkpoint sha, ...)
    int8: bool = False             # also write and validate its int8 copy (quantizable graphs only)
    vocos: Path | None = None      # the `vocoder` graph is this Vocos model, not the checkpoint's HiFT
    fp32_ready: bool = False       # the fp32 graph is already in `folder` (reused): only quantize it


@dataclass
class BuiltGraph:
    """What a job made: one entry per file (the fp32 graph, and its int8 copy when asked)."""
    name: str
    spec_name: str
    file: str                      # relative to the job's folder
    precision: str
    report: ValidationReport
    export_s: float
    validate_s: float
    selftest: dict | None = None


@dataclass
class _Worker:
    progress: Progress = print
    models: dict = field(default_factory=dict)   # checkpoint path -> prepared S3Gen (loaded once per process)


_worker = _Worker()


def job_spec(job: GraphJob, model) -> ComponentSpec:
    if job.vocos is not None and job.spec_name == "vocoder":
        from .components.vocos_vocoder import vocos_spec
        return vocos_spec(_vocos(job.vocos))
    specs = {s.name: s for s in specs_for_variant(model.variant, voice=model.has_voice)}
    if job.spec_name not in specs:
        raise ExportError(f"no graph {job.spec_name!r} in a {model.variant} export; its graphs: {', '.join(specs)}")
    return specs[job.spec_name]


def _vocos(folder: Path):
    key = ("vocos", str(folder))
    if key not in _worker.models:
        from .model.vocos_load import load_vocos
        _worker.models[key] = load_vocos(folder).model
    return _worker.models[key]


def prepared_model(checkpoint: Path):
    key = str(checkpoint)
    if key not in _worker.models:
        from .model.s3gen import load_s3gen
        from .rewrites.transforms import prepare_for_export
        _worker.models[key] = prepare_for_export(load_s3gen(checkpoint))
    return _worker.models[key]


def build_graph(job: GraphJob) -> list[BuiltGraph]:
    """Export, validate and (with int8) quantize one graph; every file lands in job.folder."""
    model = prepared_model(job.checkpoint)
    spec = job_spec(job, model)
    source = None if spec.build_reference is not None else model   # Vocos: the spec holds its own model
    path = Path(job.folder) / f"{spec.name}.onnx"
    say = _worker.progress
    built = []
    if not job.fp32_ready:
        built.append(export_and_validate(source, spec, path, job.metadata, say))
    if job.int8 and (job.fp32_ready or built[0].report.passed):
        from .stages.quantize import QUANTIZABLE, quantize_one
        if spec.name in QUANTIZABLE and not spec.fp32_only:
            start = time.perf_counter()
            q = quantize_one(ExportedGraph(spec, path), Path(job.folder), say)
            built.append(BuiltGraph(q.name, spec.name, q.path.name, "int8", q.report, time.perf_counter() - start,
                                    0.0, q.selftest))
    return built


def export_and_validate(source, spec: ComponentSpec, path: Path, metadata: dict, say: Progress) -> BuiltGraph:
    say(f"  {spec.name}: exporting ({spec.description})")
    start = time.perf_counter()
    export_component(source, spec, path, metadata=metadata)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    report = validate_component(source, spec, path)
    validate_s = time.perf_counter() - start
    say(f"  {spec.name}: {path.stat().st_size / 1e6:.0f} MB, exported in {export_s:.1f} s, "
        f"validated in {validate_s:.1f} s\n" + report.table())
    return BuiltGraph(spec.name, spec.name, path.name, "fp32", report, export_s, validate_s)


def default_jobs(graphs: int) -> int:
    """One worker per core, as many as available memory holds, no more than there are graphs."""
    return max(1, min(os.cpu_count() or 1, available_memory() // WORKER_MEMORY_BYTES, graphs))


def available_memory() -> int:
    """Bytes the system can give without swapping: MemAvailable (free pages plus the page cache it can drop;
    the free pages alone are near zero on a machine that has just written gigabytes of graphs)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return WORKER_MEMORY_BYTES


def run_jobs(jobs: list[GraphJob], workers: int, progress: Progress = print, model=None) -> list[BuiltGraph]:
    """Run the jobs here (one worker) or in `workers` worker processes, each taking the next job as it
    finishes one (start the longest first). `model`: the prepared model of the jobs' checkpoint when the
    caller has it (used in this process only). Results come back in job order."""
    if not jobs:
        return []
    if workers <= 1 or len(jobs) == 1:
        if model is not None:
            _worker.models[str(jobs[0].checkpoint)] = model
        _worker.progress = progress
        try:
            return [g for job in jobs for g in build_graph(job)]
        finally:
            _worker.models.clear()
    pending: queue.Queue = queue.Queue()
    for index, job in enumerate(jobs):
        pending.put((index, job))
    results: dict[int, list[BuiltGraph]] = {}
    errors: list[BaseException] = []
    threads = max(1, (os.cpu_count() or 1) // workers)
    drivers = [threading.Thread(target=_drive_worker, args=(pending, results, errors, threads, progress), daemon=True)
               for _ in range(min(workers, len(jobs)))]
    for d in drivers:
        d.start()
    for d in drivers:
        d.join()
    if errors:
        raise errors[0]
    return [g for index in range(len(jobs)) for g in results[index]]


def _drive_worker(pending: queue.Queue, results: dict, errors: list, threads: int, progress: Progress) -> None:
    """Feed one worker process jobs until none are left (or another worker failed)."""
    # A child interpreter of its own, not multiprocessing: spawn re-imports the caller's __main__, which
    # breaks any script that calls export_checkpoint without a main guard.
    worker = subprocess.Popen([sys.executable, "-m", __name__, str(threads)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        while not errors:
            try:
                index, job = pending.get_nowait()
            except queue.Empty:
                return
            worker.stdin.write(_encode(job) + "\n")
            worker.stdin.flush()
            for line in worker.stdout:
                kind, payload = line[0], _decode(line[2:])   # noqa: S301 - our own child's output
                if kind == "P":
                    progress(payload)
                    continue
                if kind == "R":
                    results[index] = payload
                else:
                    errors.append(payload)
                break
            else:
                errors.append(ExportError(f"the export worker for {job.spec_name} died "
                                          f"(exit code {worker.wait()}); see its output above"))
    except BaseException as e:   # noqa: BLE001 - raised by run_jobs in the caller's thread
        errors.append(e)
    finally:
        worker.stdin.close()
        if worker.wait(timeout=60) is None:
            worker.kill()


def _encode(value) -> str:
    return base64.b64encode(pickle.dumps(value)).decode()


def _decode(text: str):
    return pickle.loads(base64.b64decode(text))


def _serve(threads: int) -> None:
    """The worker process: one job per line on stdin; progress ('P'), the result ('R') or the error ('E') on
    the protocol stream. Anything else the libraries print goes to stderr, so stdout stays the protocol."""
    import torch

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    torch.set_num_threads(threads)
    set_session_threads(threads)
    _worker.progress = lambda message: protocol.write("P " + _encode(message) + "\n")
    for line in sys.stdin:
        try:
            protocol.write("R " + _encode(build_graph(_decode(line))) + "\n")
        except Exception as e:   # noqa: BLE001 - handed to the parent, which raises it
            protocol.write("E " + _encode(e if _picklable(e) else ExportError(repr(e))) + "\n")


def _picklable(e: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(e))
        return True
    except Exception:   # noqa: BLE001
        return False


if __name__ == "__main__":
    # through the package, so that what is pickled names s3gen_export.graph_jobs, not __main__
    from s3gen_export.graph_jobs import _serve as serve
    serve(int(sys.argv[1]))
