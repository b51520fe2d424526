"""What the explorer runs off the main thread, and the latest-wins runner of the slider's attack.

The job functions are generators for napari workers: each gets every value it needs as an
argument (no widget or layer is read in the worker), yields once per step (the activity dock's
progress bar counts the yields; ``worker.quit()`` stops at the next one) and returns its result.
The main thread receives what they yield and writes it into the layers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker
from qtpy.QtCore import QObject, Signal

from ..data.volume import Volume
from ..errors import AdvsegError
from ..explorer import ExplorerSession
from ..explorer_compare import ComparedModel, ComparedVolume, compared_volume_bytes
from ..explorer_volume import AttackedVolume, ExportPlan, SlicePlanes, slice_planes, write_export
from ..model_spec import ModelSpec
from ..segmentation import load_segmentation_model
from ..training.attacker_io import load_attacker
from ..training.device import select_device
from ..validation import check_memory
from .layer_scan import LayerScan

LOAD_STEPS = 4
"""Yields of :func:`load_session` without a model to compare (its progress bar's total)."""
COMPARE_STEPS = 2
"""Yields of :func:`load_compare` (added to :data:`LOAD_STEPS` when Start loads one)."""


@dataclass
class LoadedCompare:
    """A second model ready to be shown on a session's attacks, and the arrays of its layers."""

    model: ComparedModel
    volume: ComparedVolume
    path: Path
    warning: str | None = None


@dataclass
class Loaded:
    """A session ready to explore, with the posterior mean of the slice on screen."""

    session: ExplorerSession
    z_d: np.ndarray
    z_v: np.ndarray
    warning: str | None
    compare: LoadedCompare | None = None


@dataclass(frozen=True)
class SliceRequest:
    """One slider state to attack: the session, the slice, the latents and the toggles."""

    session: ExplorerSession
    index: int
    z_d: tuple[float, ...]
    z_v: tuple[float, ...]
    use_d: bool
    use_v: bool
    compare: ComparedModel | None = None


@dataclass(frozen=True)
class LatentRequest:
    """Latents to draw for a slice: its posterior mean (``seed`` None) or a seeded draw."""

    session: ExplorerSession
    index: int
    seed: int | None = None
    temperature: float = 1.0


def describe(error: BaseException) -> str:
    """A one-line message for an error raised in a worker."""
    if isinstance(error, AdvsegError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def guarded(steps: Iterator[Any]) -> Generator[Any, None, Any]:
    """Run a job's generator, turning any error into an :class:`AdvsegError`.

    napari's generator worker takes a ``RuntimeError`` (what torch raises) for a deleted
    worker and ends without its ``errored`` and ``finished`` signals; this keeps every failure
    a reported error.
    """
    try:
        return (yield from steps)
    except AdvsegError:
        raise
    except Exception as error:
        raise AdvsegError(describe(error)) from error


def job_worker(
    steps: Iterator[Any],
    total: int,
    description: str,
    yielded: Callable[[Any], object],
    returned: Callable[[Any], object],
) -> GeneratorWorker:
    """A napari worker (not started) for a job's steps, with a progress bar of ``total`` steps.

    ``yielded`` gets each step's value and ``returned`` the job's result, on the main thread;
    every error is a reported :class:`AdvsegError` (:func:`guarded`).
    """
    progress = {"total": total, "desc": description}
    worker = create_worker(
        guarded, steps, _start_thread=False, _progress=progress, _ignore_errors=True
    )
    worker.yielded.connect(yielded)
    worker.returned.connect(returned)
    return worker


def load_session(
    scan: LayerScan | Volume,
    seg_path: Path | None,
    attacker_folder: Path,
    index: int,
    spec: ModelSpec | None = None,
    force: bool = False,
    compare_path: Path | None = None,
) -> Generator[str, None, Loaded]:
    """Load the models, prepare the slices and encode slice ``index`` (4 steps, 6 to compare).

    ``spec``: how the model is fed (see ``load_segmentation_model``). An attacker of a model fed
    otherwise is refused with a ``CheckpointError`` unless ``force``. A :class:`LayerScan`'s
    labels are read as the model's organs once the model is loaded. ``compare_path``: a second
    model to show on the same attacks (:func:`load_compare`).
    """
    attacker = load_attacker(attacker_folder)
    yield "attacker loaded"
    seg = load_segmentation_model(seg_path, spec)
    warning = attacker.check_target(seg, force=force)
    if isinstance(scan, LayerScan):
        layout = scan.orientation_warning(seg.spec.orientation)
        warning = " ".join(text for text in (warning, layout) if text) or None
    volume = scan.volume(seg.spec.label_map) if isinstance(scan, LayerScan) else scan
    device = select_device("auto")
    seg.to(device)
    attacker.attacker.to(device)
    yield "segmentation model loaded"
    session = ExplorerSession(seg, attacker, volume)
    yield "slices prepared"
    z_d, z_v = session.posterior_mean(min(max(index, 0), session.num_slices - 1))
    yield "slice encoded"
    compare = None
    if compare_path is not None:
        layer_scan = scan if isinstance(scan, LayerScan) else None
        try:
            compare = yield from load_compare(session, compare_path, layer_scan)
        except AdvsegError as error:  # say which model failed
            raise type(error)(f"Compare with: {error}") from error
    return Loaded(session, z_d, z_v, warning, compare)


def load_compare(
    session: ExplorerSession, path: Path, scan: LayerScan | None = None
) -> Generator[str, None, LoadedCompare]:
    """Load a second model and prepare the scan's slices for it (2 steps).

    It is fed as its own checkpoint says (no spec is given: a TorchScript or ``.pt2`` file is
    refused).
    """
    seg = load_segmentation_model(path)
    seg.to(select_device("auto"))
    yield "model to compare with loaded"
    volume = session.volume
    check_memory(compared_volume_bytes(volume), f"Comparing with {seg.name}")
    model = ComparedModel(seg, session)
    warning = scan.orientation_warning(seg.spec.orientation) if scan is not None else None
    yield "its slices prepared"
    return LoadedCompare(model, ComparedVolume(volume.image.shape, seg.name), path, warning)


def attack_all_slices(
    session: ExplorerSession,
    z_d: np.ndarray,
    z_v: np.ndarray,
    use_d: bool,
    use_v: bool,
    compare: ComparedModel | None = None,
) -> Generator[SlicePlanes, None, int]:
    """Attack every slice with the same latents, yielding each slice's planes."""
    spacing = session.volume.spacing
    for index in range(session.num_slices):
        attack = session.attack_slice(index, z_d, z_v, use_d, use_v, compare)
        yield slice_planes(attack, spacing)
    return session.num_slices


def export_files(attacked: AttackedVolume, plan: ExportPlan) -> Generator[Path, None, list[Path]]:
    """Write the planned NIfTI files, yielding each path once written."""
    written = []
    for path in write_export(attacked, plan):
        written.append(path)
        yield path
    return written


def compute_slice(request: SliceRequest) -> tuple[SliceRequest, SlicePlanes]:
    """The attack of one slider state, as planes ready for the layers (runs in a worker)."""
    result = request.session.attack_slice(
        request.index,
        np.asarray(request.z_d, np.float32),
        np.asarray(request.z_v, np.float32),
        request.use_d,
        request.use_v,
        request.compare,
    )
    return request, slice_planes(result, request.session.volume.spacing)


def compute_latents(request: LatentRequest) -> tuple[LatentRequest, tuple[np.ndarray, np.ndarray]]:
    """The posterior mean or a seeded posterior draw of one slice (runs in a worker)."""
    if request.seed is None:
        return request, request.session.posterior_mean(request.index)
    draw = request.session.sample(request.index, request.seed, request.temperature)
    return request, draw


class LatestWins(QObject):
    """Runs ``function(request)`` in a worker thread, one call at a time, newest request first.

    While a call runs, :meth:`submit` only keeps the newest request; it runs when the call ends,
    and every request in between is dropped. While :attr:`paused` (a job runs), requests wait.
    ``done`` carries what ``function`` returned and ``failed`` the one-line message of an error,
    both on the main thread; ``busy_changed`` says when the runner starts or stops working.
    """

    done = Signal(object)
    failed = Signal(str)
    busy_changed = Signal(bool)

    def __init__(self, function: Callable[[Any], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.function = function
        self.worker: FunctionWorker | None = None
        self.pending: Any = None
        self.current: Any = None
        self.paused = False

    @property
    def busy(self) -> bool:
        """Whether a call runs now."""
        return self.worker is not None

    def submit(self, request: Any) -> None:
        """Run ``request`` now if idle, else keep it (alone) for when the current call ends.

        A request equal to the one running replaces nothing: its result is on its way.
        """
        if self.worker is not None and request == self.current:
            self.pending = None
            return
        if self.worker is not None or self.paused:
            self.pending = request
            return
        self._start(request)

    def clear(self) -> None:
        """Forget the waiting request."""
        self.pending = None

    def pause(self) -> None:
        """Hold new requests until :meth:`resume`."""
        self.paused = True

    def resume(self) -> None:
        """Run the newest request held while paused."""
        self.paused = False
        if self.worker is None and self.pending is not None:
            request, self.pending = self.pending, None
            self._start(request)

    def _start(self, request: Any) -> None:
        worker = FunctionWorker(self.function, request)
        worker.returned.connect(self.done)
        worker.errored.connect(self._errored)
        worker.finished.connect(self._finished)
        self.worker = worker
        self.current = request
        self.busy_changed.emit(True)
        worker.start()

    def _errored(self, error: Exception) -> None:
        self.failed.emit(describe(error))

    def _finished(self) -> None:
        self.worker = None
        self.current = None
        if self.pending is not None and not self.paused:
            request, self.pending = self.pending, None
            self._start(request)
        else:
            self.busy_changed.emit(False)
