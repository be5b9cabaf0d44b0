"""Datasets: a corpus of videos as one folder, fitted (and prepared for the generator) video by video as Ray
tasks, locally or on a Ray cluster, resumable, with one video's failure kept to its own row.

The dataset folder (format ``headrep.dataset`` version 1)::

    DATASET/
      dataset.json      format, version, created, and the settings of the last `headrep dataset fit`
                        ("fit": {config, model, model_sha256, frames, stride, estimator}) that --resume reuses;
                        model is "standin" / "open" (the project's own models, built on each machine) or a file
                        path (null in datasets made before the open model became the default: the stand-in)
      dataset.jsonl     THE MANIFEST: one JSON object per line, one line per video, in the order videos were
                        added. It is what a resumed run reads; it is rewritten whole (temporary file + rename,
                        under an flock on DATASET/.lock) every time a row changes, so a reader never sees a
                        half-written manifest and two commands working on one dataset do not lose each other's rows.
      reps/ID/          the HeadRep of video ID (the folder `headrep fit` writes; while a fit runs, or after an
                        interruption, only its .fit-checkpoint/, which the next run continues from)
      clips/ID/         the generator clip of video ID (`generator prepare --dataset`)
      .lock             the manifest's lock file

A manifest row (every key is always present; null where unknown / not yet done)::

    id          folder name of the video's rep and clip: the file's stem made filename-safe, "-2", "-3"... on a clash
    source      absolute path of the video (on a cluster every node must see it at this path)
    sha256      of the video file (re-hashed only when its size or mtime changed: size, mtime_ns)
    frames, fps, width, height   what the container says (video_info; null when it cannot be opened)
    status      "pending" (not fitted yet, or interrupted) | "fitted" | "prepared" (clip written) | "failed"
    stage       what failed: "fit" or "prepare" (null unless status is failed)
    error       the error text of a failed video (one line for input errors; the exception and message
                otherwise); ``traceback`` holds the last lines of an unexpected error's traceback
    attempts    how many runs have scheduled this video's fit
    settings    what the rep depends on: {config (FitConfig dict), model_sha256, frames ("A:B" or null),
                stride, estimator (sha256 or null)}; ``settings_key`` is the sha256 of it (canonical JSON).
                A video is fitted again when its sha256 or settings_key differ from the row's.
    rep         "reps/ID" (relative to DATASET) once fitted
    metrics     {landmark_nme, normal_deg, depth_ssi (of the last stage), iou (when the fit records one),
                frames_fitted, valid_frames, s_per_frame}
    fit         {seconds (task wall time), peak_rss_mb (the task process's peak resident memory while it
                ran), threads, node (IP), finished (UTC ISO time)}
    clip        "clips/ID" once prepared;  ``prepare``: {seconds, resolution, peak_rss_mb, node, finished}
    updated     UTC ISO time of the row's last change

Running: each video is one Ray task (:func:`run_tasks`) asking for ``cpus_per_video`` CPUs (and
``gpus_per_video`` GPUs); inside it torch, numba and OpenMP use exactly that many threads (:func:`limit_threads`),
so concurrent fits do not oversubscribe the cores. An input error (no face, unreadable file:
:class:`~headrep.errors.HeadrepError`) fails the video at once; a crashed or out-of-memory worker, a lost node or
an unexpected exception is retried up to ``max_retries`` times by Ray, then recorded. Ctrl-C cancels the
running tasks, leaves their rows "pending" (their fit checkpoints stay) and stops Ray; ``resume`` continues.
Without ``address`` a local Ray is started for the command and stopped at its end (no dashboard, no usage
statistics, nothing reached over the network).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from headrep.errors import HeadrepError

__all__ = ["FORMAT", "VERSION", "MANIFEST", "STATUSES", "Manifest", "collect_videos", "fit_dataset", "fit_settings",
           "fit_task", "fitted_reps", "limit_threads", "ray_session", "run_tasks", "settings_key", "summary_rows"]

FORMAT = "headrep.dataset"
VERSION = 1
MANIFEST = "dataset.jsonl"
INFO = "dataset.json"
STATUSES = ("pending", "fitted", "prepared", "failed")
LIST_SUFFIXES = (".txt", ".lst", ".list")
ROW_KEYS = ("id", "source", "sha256", "size", "mtime_ns", "frames", "fps", "width", "height", "status", "stage",
            "error", "traceback", "attempts", "settings", "settings_key", "rep", "metrics", "fit", "clip", "prepare",
            "updated")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ----------------------------------------------------------------------------------------------------------
# the manifest


class Manifest:
    """The manifest of the dataset folder ``root`` (see the module docstring): read, and changed row by row
    under a lock, each change an atomic rewrite of the whole file."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / MANIFEST

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> list[dict]:
        """The rows, in order (HeadrepError naming the line when one is not a JSON object with an id)."""
        if not self.path.is_file():
            return []
        rows = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HeadrepError(f"{self.path} line {n} is not JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise HeadrepError(f"{self.path} line {n} is not a manifest row (a JSON object with an id)")
            rows.append({**{k: None for k in ROW_KEYS}, **row})
        return rows

    def rows(self) -> dict[str, dict]:
        return {r["id"]: r for r in self.read()}

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the dataset's lock (flock on DATASET/.lock; a no-op where flock does not exist)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            try:
                import fcntl
            except ImportError:  # not POSIX
                yield
                return
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, rows: list[dict]) -> None:
        from headrep.io import atomic_write

        text = "".join(json.dumps(r, separators=(", ", ": ")) + "\n" for r in rows)
        with atomic_write(self.path) as tmp:
            tmp.write_text(text)

    def add(self, rows: Iterable[dict]) -> None:
        """Append rows (ids must be new) in one atomic rewrite."""
        with self.locked():
            have = self.read()
            ids = {r["id"] for r in have}
            new = []
            for r in rows:
                if r["id"] in ids:
                    raise HeadrepError(f"dataset {self.root}: a row {r['id']!r} exists already")
                ids.add(r["id"])
                new.append({**{k: None for k in ROW_KEYS}, **r, "updated": _now()})
            self._write(have + new)

    def update(self, row_id: str, **fields) -> dict:
        """Change fields of row ``row_id`` (re-read under the lock, so other writers' rows are kept); returns it."""
        with self.locked():
            rows = self.read()
            for r in rows:
                if r["id"] == row_id:
                    r.update(fields)
                    r["updated"] = _now()
                    self._write(rows)
                    return r
        raise HeadrepError(f"dataset {self.root}: no row {row_id!r}")

    def update_many(self, changes: dict[str, dict]) -> None:
        """Change fields of several rows ({id: fields}) in one atomic rewrite (a corpus's worth of rows at once)."""
        if not changes:
            return
        with self.locked():
            rows = self.read()
            now = _now()
            for r in rows:
                if r["id"] in changes:
                    r.update(changes[r["id"]])
                    r["updated"] = now
            self._write(rows)

    def info(self) -> dict:
        p = self.root / INFO
        if not p.is_file():
            return {}
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HeadrepError(f"{p} cannot be read: {exc}") from None

    def write_info(self, **fields) -> None:
        from headrep.io import atomic_write

        info = {"format": FORMAT, "version": VERSION, "created": _now(), **self.info(), **fields}
        with atomic_write(self.root / INFO) as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n")


def fitted_reps(root: str | os.PathLike) -> list[Path]:
    """The rep folders of every fitted video of dataset ``root`` (status fitted or prepared, or failed only at
    the prepare stage), in manifest order. HeadrepError when ``root`` is not a dataset or has none."""
    root = Path(root)
    m = Manifest(root)
    if not m.exists():
        raise HeadrepError(f"{root} is not a dataset folder ({MANIFEST} is missing; make one with "
                           f"`headrep dataset fit VIDEOS -o {root}`)")
    reps = [root / r["rep"] for r in m.read() if r["rep"] and (r["status"] in ("fitted", "prepared") or
                                                               (r["status"] == "failed" and r["stage"] == "prepare"))]
    reps = [p for p in reps if (p / "rep.json").is_file()]
    if not reps:
        raise HeadrepError(f"dataset {root} has no fitted video yet (run `headrep dataset fit ... -o {root}`)")
    return reps


# ----------------------------------------------------------------------------------------------------------
# inputs, ids, settings


def collect_videos(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Video paths from command-line items, in order, without repeats: a list file (.txt/.lst/.list: one path
    or glob per line, ``#`` comments, relative to the list's folder), a folder (its video files, recursively,
    sorted), a glob (``*``, ``?``, ``[``; ``**`` recursive), or a path (kept even when it does not exist: the
    video is then recorded as failed). HeadrepError for a glob or folder that matches no video."""
    from headrep.io import VIDEO_EXTENSIONS

    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        p = p.expanduser().absolute()
        if p not in seen:
            seen.add(p)
            out.append(p)

    def one(item: str, base: Path | None, depth: int) -> None:
        text = os.path.expanduser(str(item))
        p = Path(text) if base is None or Path(text).is_absolute() else base / text
        if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            if depth > 4:
                raise HeadrepError(f"list file {p} nests list files too deeply")
            for n, line in enumerate(p.read_text().splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    one(line, p.parent, depth + 1)
        elif p.is_dir():
            vids = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS
                          and not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not vids:
                raise HeadrepError(f"folder {p} holds no video ({', '.join(VIDEO_EXTENSIONS)})")
            for q in vids:
                add(q)
        elif any(c in text for c in "*?["):
            hits = sorted(Path(h) for h in glob.glob(str(p), recursive=True) if Path(h).is_file())
            if not hits:
                raise HeadrepError(f"pattern {text!r} matches no file")
            for q in hits:
                add(q)
        else:
            add(p)

    for item in items:
        one(str(item), None, 0)
    return out


def _slug(stem: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")
    return s or "video"


def _new_id(path: Path, taken: set[str]) -> str:
    base = _slug(path.stem)
    rid, k = base, 2
    while rid in taken:
        rid, k = f"{base}-{k}", k + 1
    taken.add(rid)
    return rid


def _probe(path: Path, old: dict | None) -> dict:
    """sha256 (reused from ``old`` when size and mtime match), size, mtime and the container's frames/fps/size."""
    from headrep.io import file_sha256, video_info

    d = {"size": None, "mtime_ns": None, "sha256": None, "frames": None, "fps": None, "width": None, "height": None}
    try:
        st = path.stat()
    except OSError:
        return d
    d["size"], d["mtime_ns"] = int(st.st_size), int(st.st_mtime_ns)
    if old and old.get("sha256") and old.get("size") == d["size"] and old.get("mtime_ns") == d["mtime_ns"]:
        d["sha256"] = old["sha256"]
        d.update({k: old.get(k) for k in ("frames", "fps", "width", "height")})
        return d
    try:
        d["sha256"] = file_sha256(path)
    except OSError:
        return d
    try:
        d.update(video_info(path))
    except (HeadrepError, ValueError, OSError):
        pass
    return d


def fit_settings(config, model_sha256: str, frames: str | None = None, stride: int = 1,
                 estimator: str | None = None) -> dict:
    """What a rep depends on besides its video (recorded per row; see :func:`settings_key`)."""
    from headrep.io import file_sha256

    est = None
    if estimator is not None:
        p = Path(estimator)
        est = file_sha256(p) if p.is_file() else str(estimator)
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {"config": cfg, "model_sha256": model_sha256, "frames": frames, "stride": int(stride), "estimator": est}


def settings_key(settings: dict) -> str:
    """sha256 of the settings as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------------
# threads and Ray

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads(n: int) -> None:
    """Make this process compute on ``n`` threads: torch's intra-op pool, numba's parallel kernels, and (through
    the environment, for libraries loaded later, and OpenCV) OpenMP / BLAS / cv2. Oversubscribed OpenMP threads
    spin while they wait, so two 2-thread fits on 2 cores run far slower than two 1-thread fits."""
    n = max(1, int(n))
    for k in THREAD_ENV:
        if k != "NUMBA_NUM_THREADS" or "numba" not in sys.modules:
            os.environ[k] = str(n)
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only possible before the first parallel work of the process
        torch.set_num_interop_threads(n)
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(n)
    with contextlib.suppress(Exception):
        import numba

        numba.set_num_threads(min(n, int(numba.config.NUMBA_NUM_THREADS)))


class _PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 0.1 s, MB)."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.1):
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mb(self) -> float:
        return self.peak / 2 ** 20


def _task(fn: Callable, kwargs: dict, threads: int) -> dict:
    """What one Ray task runs: ``fn(**kwargs)`` on ``threads`` threads. An input error (HeadrepError) is returned
    as {"ok": False, "error": ...} (no retry: it would fail again); any other exception propagates (Ray retries
    it). Adds the task's wall time, peak memory, thread count and node."""
    limit_threads(threads)
    t0 = time.perf_counter()
    node = None
    with contextlib.suppress(Exception):
        import ray

        node = ray.util.get_node_ip_address()
    with _PeakRSS() as mem:
        try:
            result = {"ok": True, **(fn(**kwargs) or {})}
        except HeadrepError as exc:
            result = {"ok": False, "error": str(exc) or type(exc).__name__}
    result.update(seconds=round(time.perf_counter() - t0, 3), peak_rss_mb=round(mem.mb, 1), threads=threads,
                  node=node, finished=_now())
    return result


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, threads: int = 1) -> Iterator[dict]:
    """Connect to the Ray cluster at ``address`` ("auto": the one started with `ray start` on this machine), or
    start a local Ray with ``num_cpus`` CPUs (default: all) for the block and stop it afterwards. Local Ray runs
    without a dashboard and without usage statistics. Yields {address, local, cpus, gpus, start_seconds}."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import logging

    try:
        import ray
    except ImportError:
        raise HeadrepError("Ray is not installed here: pip install 'ray>=2.60'") from None

    if ray.is_initialized():  # a caller (a notebook, a test) already connected: use that cluster as it is
        res = ray.cluster_resources()
        yield {"address": "existing", "local": False, "cpus": float(res.get("CPU", 0)),
               "gpus": float(res.get("GPU", 0)), "start_seconds": 0.0}
        return
    t0 = time.perf_counter()
    env = {k: str(threads) for k in THREAD_ENV}  # workers import numba with a pool of this size
    try:
        if address:
            ray.init(address=address, runtime_env={"env_vars": env}, logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env},
                     logging_level=logging.WARNING, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise HeadrepError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    except (RuntimeError, ValueError) as exc:
        raise HeadrepError(f"cannot start Ray: {exc}") from None
    old = None
    if threading.current_thread() is threading.main_thread():
        import signal

        def stop(signum, frame):  # ray.init installed a handler that aborts: `kill` stops like Ctrl-C instead
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGTERM, stop)
    try:
        res = ray.cluster_resources()
        yield {"address": address or "local", "local": not address, "cpus": float(res.get("CPU", 0)),
               "gpus": float(res.get("GPU", 0)), "start_seconds": time.perf_counter() - t0}
    finally:
        ray.shutdown()
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _error_of(exc: BaseException) -> tuple[str, str | None]:
    """(one-line error, traceback tail or None) of what ray.get raised."""
    import traceback

    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        tb = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        text = str(exc)
        tail = "\n".join(text.strip().splitlines()[-20:]) if "Traceback" in text else tb[-4000:]
        return f"{type(cause).__name__}: {cause}".strip().splitlines()[0][:2000], tail
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return f"{type(exc).__name__}: {lines[0]}"[:2000], "\n".join(lines[-20:])


def run_tasks(fn: Callable, jobs: list[tuple[str, dict]], on_result: Callable[[str, dict], None],
              cpus: float = 1, gpus: float = 0, max_retries: int = 1, slots: int | None = None,
              on_tick: Callable[[int], None] | None = None, threads: int | None = None) -> None:
    """Run ``fn(**kwargs)`` for each (key, kwargs) of ``jobs`` as Ray tasks (Ray must be initialised, e.g. by
    :func:`ray_session`) asking for ``cpus`` CPUs and ``gpus`` GPUs each, at most ``slots`` at a time, and call
    ``on_result(key, result)`` in this process as each ends: the task's dict plus "ok", "seconds",
    "peak_rss_mb", "threads", "node", "finished"; {"ok": False, "error", "traceback"} when it failed. Input
    errors (HeadrepError) fail at once; crashes, lost workers and other exceptions are retried ``max_retries``
    times. ``on_tick(running)`` is called about once a second. ``threads``: the task's torch/numba/OpenMP threads
    (default: its CPUs, rounded; anything else oversubscribes or idles cores - the benchmark's contrast). On
    KeyboardInterrupt the running tasks are cancelled (their workers killed) and the interrupt propagates."""
    import ray

    threads = max(1, int(round(cpus))) if threads is None else max(1, int(threads))
    remote = ray.remote(_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=max(0, int(max_retries)),
                                       retry_exceptions=max_retries > 0)
    if slots is None:
        res = ray.cluster_resources()
        slots = int(res.get("CPU", 1) // cpus) if cpus > 0 else len(jobs)
        if gpus > 0:
            slots = min(slots, int(res.get("GPU", 0) // gpus))
    if slots < 1:
        res = ray.cluster_resources()
        raise HeadrepError(f"each task asks for {cpus:g} CPU(s) and {gpus:g} GPU(s) but the Ray cluster has "
                           f"{res.get('CPU', 0):g} CPU(s) and {res.get('GPU', 0):g} GPU(s)")
    queue = list(jobs)
    running: dict = {}
    try:
        while queue or running:
            while queue and len(running) < slots:
                key, kwargs = queue.pop(0)
                running[remote.remote(fn, kwargs, threads)] = key
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in done:
                key = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    error, tb = _error_of(exc)
                    result = {"ok": False, "error": error, "traceback": tb}
                on_result(key, result)
            if on_tick is not None:
                on_tick(len(running))
    except BaseException:
        for ref in running:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise


# ----------------------------------------------------------------------------------------------------------
# fitting a dataset


def fit_task(source: str, out: str, config: dict, model: str | None, device: str, frames: str | None,
             stride: int, estimator: str | None, resume: bool) -> dict:
    """The body of one fit task: fit_video into ``out`` and the row's metrics."""
    from headrep.fitting import FitConfig, fit_video
    from headrep.io import parse_slice

    sel = parse_slice(frames) if frames else None
    rep = fit_video(source, out, FitConfig.from_dict(config), model=model, device=device, progress=False,
                    frames=sel, stride=stride, estimator=estimator, resume=resume, overwrite=True)
    stats = rep.meta["fit"]["stats"]
    last = stats.get("detail") or stats.get("coarse") or {}
    iou = next((v for k, v in last.items() if "iou" in k.lower() and isinstance(v, (int, float))), None)
    T = int(rep.num_frames)
    return {"metrics": {"landmark_nme": last.get("landmark_nme"), "normal_deg": last.get("normal_deg"),
                        "depth_ssi": last.get("depth_ssi"), "iou": iou, "frames_fitted": T,
                        "valid_frames": int(rep.valid.sum()),
                        "s_per_frame": stats.get("seconds_per_frame")}}


def summary_rows(rows: list[dict]) -> dict:
    """Counts per status, and the frames fitted."""
    counts = {s: 0 for s in STATUSES}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def fit_dataset(videos: Iterable[str | os.PathLike], root: str | os.PathLike, config=None, model=None,
                device: str = "auto", frames: str | None = None, stride: int = 1, estimator: str | None = None,
                address: str | None = None, num_cpus: int | None = None, cpus_per_video: float = 1,
                gpus_per_video: float = 0, max_retries: int = 1, resume: bool = False, retry_failed: bool = False,
                progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Fit every video of ``videos`` (paths, globs, folders, list files: :func:`collect_videos`) into the dataset
    folder ``root`` as Ray tasks and return {"rows": manifest rows, "ran": ids fitted or failed by this run,
    "skipped": ids already fitted with the same file and settings, "seconds", "ray": ray_session's info,
    "frames": frames fitted by this run}.

    A new ``root`` must be missing or empty; an existing dataset needs ``resume`` (its recorded videos are
    continued, ``videos`` are added). ``config`` (FitConfig), ``model``, ``device``, ``frames`` ("A:B" source
    frames), ``stride`` and ``estimator`` are fit_video's, for every video. A video is skipped when its row is
    fitted/prepared with the same sha256 and settings; a failed one is tried again only when its file or the
    settings changed, or with ``retry_failed``. Ray: see :func:`ray_session` (``address``, ``num_cpus``) and
    :func:`run_tasks` (``cpus_per_video``, ``gpus_per_video``, ``max_retries``).
    """
    from headrep.fitting import FitConfig
    from headrep.io import parse_slice
    from headrep.io import progress as progress_bar
    from headrep.model import BodyModel
    from headrep.model.body import MODEL_NAMES

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    root = Path(root)
    config = config or FitConfig()
    if root.exists() and not root.is_dir():
        raise HeadrepError(f"dataset {root} exists and is not a folder")
    man = Manifest(root)
    if resume and not man.exists():
        raise HeadrepError(f"nothing to resume: {root} holds no dataset ({MANIFEST} is missing)")
    if not resume and root.is_dir() and any(root.iterdir()):
        what = (f"a dataset of {len(man.read())} video(s); pass --resume to continue it (and add videos)"
                if man.exists() else "files that are not a dataset")
        raise HeadrepError(f"dataset folder {root} is not empty: it holds {what}")
    if frames is not None and isinstance(parse_slice(frames), int):
        raise HeadrepError(f"--frames must look like A:B (e.g. 0:100), got {frames!r}")
    if stride < 1:
        raise HeadrepError(f"stride must be at least 1, got {stride}")
    if cpus_per_video <= 0 or gpus_per_video < 0:
        raise HeadrepError("--cpus-per-video must be positive and --gpus-per-video not negative")
    if max_retries < 0:
        raise HeadrepError(f"--max-retries must be 0 or more, got {max_retries}")
    paths = collect_videos(videos)
    body = model if isinstance(model, BodyModel) else BodyModel(model)  # a bad model fails here, once
    # what the tasks (and a resumed run) are told: the project's own models by name, so that every machine
    # uses (or builds) its own cached copy, and never None, whose meaning $HEADREP_DEFAULT_MODEL may change
    named = not isinstance(model, (str, os.PathLike)) or str(model) in MODEL_NAMES  # None, a name, a BodyModel
    own = body.kind in MODEL_NAMES and named
    model_arg = body.kind if own else str(body.path)
    settings = fit_settings(config, body.sha256, frames, stride, estimator)
    key = settings_key(settings)
    root.mkdir(parents=True, exist_ok=True)

    # rows: the manifest's, plus new videos
    old = man.rows()
    by_source = {r["source"]: r["id"] for r in old.values()}
    taken = set(old)
    new_rows = []
    for p in paths:
        if str(p) not in by_source:
            rid = _new_id(p, taken)
            by_source[str(p)] = rid
            new_rows.append({"id": rid, "source": str(p), "status": "pending", "attempts": 0})
    if new_rows:
        man.add(new_rows)
    if not man.read():
        raise HeadrepError("no video to fit")
    man.write_info(fit={"config": config.to_dict(), "model": model_arg, "model_sha256": body.sha256,
                        "frames": frames, "stride": int(stride), "estimator": estimator})

    # what to run (one manifest rewrite for all the rows' new fields)
    jobs, skipped, missing, changes = [], [], [], {}
    rows = man.read()
    for r in progress_bar(rows, len(rows), "dataset check", unit="video", enabled=progress and len(rows) > 50):
        src = Path(r["source"])
        probe = _probe(src, r)
        same = probe["sha256"] is not None and probe["sha256"] == r["sha256"] and r["settings_key"] == key
        rep_ok = r["rep"] is not None and (root / r["rep"] / "rep.json").is_file()
        if same and r["status"] in ("fitted", "prepared") and rep_ok:
            skipped.append(r["id"])
            continue
        if same and r["status"] == "failed" and not retry_failed:
            if r["stage"] == "fit":
                skipped.append(r["id"])
                continue
            if rep_ok:  # failed while preparing: the rep itself is fine
                skipped.append(r["id"])
                continue
        out = root / "reps" / r["id"]
        ckpt = out / ".fit-checkpoint"
        can_resume = (r["status"] == "pending" and r["settings_key"] == key and probe["sha256"] == r["sha256"]
                      and ckpt.is_dir() and not (out / "rep.json").is_file())
        fields = {**probe, "status": "pending", "stage": None, "error": None, "traceback": None,
                  "settings": settings, "settings_key": key, "attempts": int(r["attempts"] or 0) + 1}
        if r["clip"] is not None:  # a refit makes the clip stale
            import shutil

            shutil.rmtree(root / r["clip"], ignore_errors=True)
            fields.update(clip=None, prepare=None)
        if not src.is_file():
            changes[r["id"]] = {**fields, "status": "failed", "stage": "fit",
                                "error": f"input {src} does not exist" if not src.exists()
                                else f"input {src} is not a file"}
            missing.append(r["id"])
            continue
        changes[r["id"]] = fields
        jobs.append((r["id"], {"source": str(src), "out": str(out), "config": config.to_dict(), "model": model_arg,
                               "device": "cuda" if gpus_per_video > 0 else device, "frames": frames,
                               "stride": int(stride), "estimator": estimator, "resume": can_resume}))
    man.update_many(changes)
    ran: list[str] = list(missing)
    stats = {"fitted": 0, "failed": len(missing), "frames": 0, "running": 0}
    t0 = time.perf_counter()
    info = {"address": None, "local": True, "cpus": 0, "gpus": 0, "start_seconds": 0.0}
    if skipped:
        say(f"headrep dataset: {len(skipped)} video(s) already fitted (or failed) with the same file and settings: "
            f"skipped" + ("" if retry_failed else " (--retry-failed fits the failed ones again)"))
    if jobs:
        with ray_session(address, num_cpus, threads=max(1, int(round(cpus_per_video)))) as info:
            say(f"headrep dataset: {len(jobs)} video(s) to fit on Ray ({info['address']}: {info['cpus']:g} CPU, "
                f"{info['gpus']:g} GPU; {cpus_per_video:g} CPU / {gpus_per_video:g} GPU per video; "
                f"started in {info['start_seconds']:.1f} s)")
            bar = progress_bar(None, len(jobs), "dataset fit", unit="video", enabled=progress)

            def on_result(rid: str, res: dict) -> None:
                ran.append(rid)
                task = {k: res.get(k) for k in ("seconds", "peak_rss_mb", "threads", "node", "finished")}
                if res["ok"]:
                    stats["fitted"] += 1
                    stats["frames"] += int(res["metrics"]["frames_fitted"])
                    man.update(rid, status="fitted", rep=f"reps/{rid}", metrics=res["metrics"], fit=task)
                else:
                    stats["failed"] += 1
                    rep_dir = root / "reps" / rid
                    if rep_dir.is_dir() and not (rep_dir / "rep.json").is_file():
                        import shutil

                        shutil.rmtree(rep_dir, ignore_errors=True)
                    man.update(rid, status="failed", stage="fit", error=res["error"],
                               traceback=res.get("traceback"), rep=None, metrics=None, fit=task)
                on_tick(None)
                bar.update(1)

            def on_tick(running: int | None) -> None:
                if running is not None:
                    stats["running"] = running
                running = stats["running"]
                dt = time.perf_counter() - t0
                bar.set_postfix({"fitted": stats["fitted"], "failed": stats["failed"], "running": running,
                                 "frames/s": f"{stats['frames'] / dt:.2f}" if dt > 0 else "0"})

            try:
                run_tasks(fit_task, jobs, on_result, cpus=cpus_per_video, gpus=gpus_per_video,
                          max_retries=max_retries, on_tick=on_tick)
            finally:
                on_tick(0)
                bar.close()
    return {"rows": man.read(), "ran": ran, "skipped": skipped, "seconds": time.perf_counter() - t0,
            "frames": stats["frames"], "ray": info}
