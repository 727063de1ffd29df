"""Camera poses with pycolmap (CPU SIFT): SfM for real captures, triangulation for known cameras.

`estimate_poses(clip, workdir, config)` is the stage's one entry point.  It always writes a
report (registered images, reprojection error, track length, seconds per step and, when the clip
came with cameras, pose errors against them) and never hides a poor result: `PosesResult.problem`
says in one line what went wrong and what to try, and the CLI turns that into a failure after
the outputs are kept.

Every COLMAP step (features, matching, mapping, triangulation) runs in a process of its own
(`run_step`, `recon/colmap_worker.py`), single-threaded where threads change the result, so the
same frames give the same cameras in any process; COLMAP's log is kept in `colmap.log`.

Loop closure: COLMAP's vocabulary-tree loop detection needs a downloaded tree, so orbitforge
builds a tiny bag of visual words from the clip's own SIFT descriptors (k-means with scipy) and
matches each frame with its most similar distant frames: where an orbit returns to its start.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from PIL import Image

from orbitforge.cameras import Cameras, from_colmap
from orbitforge.clip import Clip
from orbitforge.errors import InputError
from orbitforge.recon.logged import run_logged
from orbitforge.recon.metrics import pose_errors
from orbitforge.recon.normalise import Similarity, normalise_world

logger = logging.getLogger(__name__)

CameraModel = Literal["SIMPLE_RADIAL", "PINHOLE", "SIMPLE_PINHOLE", "RADIAL", "OPENCV"]


@dataclass(frozen=True)
class PosesConfig:
    """SfM settings; defaults suit a hand-held orbit of one object."""

    matching: Literal["auto", "exhaustive", "sequential"] = "auto"
    """"auto": exhaustive up to `exhaustive_max_images` frames, else sequential + loop pairs."""
    mapper: Literal["incremental", "global"] = "incremental"
    """COLMAP's incremental mapper, or the global (GLOMAP) one."""
    camera_model: CameraModel = "SIMPLE_RADIAL"
    """One camera shared by every frame; PINHOLE with fixed intrinsics when they are known."""
    max_features: int = 8192
    """SIFT features per image."""
    peak_threshold: float = 0.0067
    """SIFT contrast threshold (COLMAP's default 0.0067); lower finds features on plain,
    low-contrast surfaces, e.g. small renders of smooth objects."""
    exhaustive_max_images: int = 60
    """Above this many frames, "auto" matching turns sequential (pairs grow quadratically)."""
    sequential_overlap: int = 10
    """Each frame is matched with this many following frames (quadratically spaced beyond)."""
    loop_pairs: int = 3
    """Most similar distant frames matched per frame (bag-of-words loop closure)."""
    min_registered_fraction: float = 0.6
    """Below this share of registered frames the stage reports a failure."""
    max_reprojection_px: float = 2.0
    """Above this mean reprojection error the stage reports a failure."""
    verify_known: bool = False
    """For clips with known cameras: also run SfM and report errors against them."""
    correct_threshold_deg: float = 2.0
    """A camera counts as right when its aligned rotation error is at most this."""
    seed: int = 0
    """Seed for RANSAC and k-means, so that runs repeat."""
    affine_shape: bool = True
    """Affine-adapted SIFT (COLMAP's `estimate_affine_shape`).  On the 48-frame Spot orbit
    through H.264 it cut the median rotation error from 0.71 to 0.44-0.52 deg (with the
    reprojection filter below); neutral on the Middlebury temple."""
    filter_max_reprojection_px: float = 1.0
    """Observations farther than this from their point's projection are dropped while mapping, in
    pixels of the images SIFT sees (COLMAP's default is 4).  Features whose support straddles a
    silhouette slide along it as the camera moves and match a few pixels off the true point;
    measured on the Spot orbit they pulled the cameras ~1 deg off (median 1.69 -> 0.71 deg at 1 px).
    The last mapping attempt falls back to COLMAP's 4 px when frames are still left out."""
    min_feature_side: int = 512
    """Frames whose longer side is below this are enlarged (bicubic, by a whole factor) before
    SIFT: small renders of smooth objects otherwise give ~100 features per frame."""
    mapping_attempts: int = 3
    """Mapper runs at most (the later ones with a relaxed initial pair, the last also with COLMAP's
    default 4 px reprojection filter) while frames are left out."""
    refine: bool = False
    """After SfM, fit splats and camera corrections to the frames together (`recon/refine.py`):
    cameras from every pixel, not only from SIFT points.  On the 48-frame Spot orbit the median
    rotation error goes from 0.59 to 0.24 deg, for ~2.5 min on 2 CPU cores; on the Middlebury
    temple, where SIFT is sharp, from 0.09 to 0.34 deg (known K) at 256 px, so it is opt-in."""
    refine_steps: int = 1500
    """Joint optimisation steps of `refine`."""
    refine_max_side: int = 256
    """Frames are shrunk to this longer side for `refine` (speed)."""
    threads: int = 1
    """Threads of matching and mapping.  One makes a run repeat exactly for the same frames: with
    every core, 1 in 20 matchings of the 48-frame Spot orbit gave different matches for a few pairs
    (measured on 2 cores), and multi-threaded mapping of the same database differed too.  -1 uses
    every core: matching ~1.7x faster on 2 cores, and bundle adjustment of large captures (above
    ~50,000 residuals) pays off."""


@dataclass
class PosesResult:
    """What the poses stage found.

    Attributes:
        clip: the registered frames with their cameras, in the normalised world (None on failure).
        report: JSON-ready numbers (also written to report.json).
        problem: one line saying what went wrong and what to try, or None.
        reconstruction: the pycolmap model (normalised), or None.
    """

    clip: Clip | None
    report: dict
    problem: str | None = None
    reconstruction: object | None = field(default=None, repr=False)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = round(self.seconds.get(step, 0.0) + time.perf_counter() - t0, 3)


# ---------------------------------------------------------------------------------------------
# every COLMAP step in a fresh process
# ---------------------------------------------------------------------------------------------


def run_step(step: str, stage_dir: Path, **arguments) -> dict:
    """Runs one COLMAP step ("extract", "match", "map" or "triangulate") in a new Python process
    (`recon/colmap_worker.py`) and returns the dict it reports; COLMAP's log goes to
    `stage_dir/colmap.log`, and to stderr too where pycolmap's own log level would show INFO.

    Why a process of its own: pycolmap's mapper carries state from one call to the next within a
    process.  In the poses bench the Spot orbit's sequential + incremental run came out at 1.33 deg
    after other captures had run in the same process, against 0.54 deg alone, from the same
    matches.  A fresh process maps the same matches to the same cameras every time, and a COLMAP
    abort (a failed internal check ends its process) becomes one line here instead of ending the
    user's process.
    """
    import pycolmap

    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    job_file, result_file = stage_dir / f".colmap_{step}.json", stage_dir / f".colmap_{step}_result.json"
    log = stage_dir / "colmap.log"
    job = {"step": step, "result": str(result_file), **arguments}
    if isinstance(job.get("config"), PosesConfig):
        job["config"] = asdict(job["config"])
    job_file.write_text(json.dumps(job, default=str))
    result_file.unlink(missing_ok=True)
    echo = pycolmap.logging.minloglevel == 0  # the CLI shows COLMAP's INFO log only with -vv
    with open(log, "a") as out:
        out.write(f"==== {step} ====\n")
    try:
        run_logged([sys.executable, "-m", "orbitforge.recon.colmap_worker", str(job_file)], log,
                   f"COLMAP stopped during {step}", on_line=sys.stderr.write if echo else None,
                   error_marks=("Check failed", "Error"))
        return json.loads(result_file.read_text())
    finally:
        job_file.unlink(missing_ok=True)
        result_file.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# features and matching
# ---------------------------------------------------------------------------------------------


def _write_images(clip: Clip, folder: Path, upscale: int) -> list[str]:
    """Frames as PNGs for COLMAP, enlarged `upscale` times (bicubic) when small."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i:05d}.png" for i in range(len(clip))]
    for name, frame in zip(names, clip.frames):
        image = Image.fromarray(frame)
        if upscale > 1:
            image = image.resize((clip.width * upscale, clip.height * upscale), Image.Resampling.BICUBIC)
        image.save(folder / name, compress_level=1)
    return names


def _camera_params(model: str, K: np.ndarray | None, focal_px: float | None, width: int, height: int) -> str:
    """COLMAP's comma-separated params for the reader, or "" to let COLMAP guess."""
    if K is not None:
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        values = {"PINHOLE": [fx, fy, cx, cy], "SIMPLE_PINHOLE": [(fx + fy) / 2, cx, cy],
                  "SIMPLE_RADIAL": [(fx + fy) / 2, cx, cy, 0.0], "RADIAL": [(fx + fy) / 2, cx, cy, 0.0, 0.0],
                  "OPENCV": [fx, fy, cx, cy, 0.0, 0.0, 0.0, 0.0]}[model]
    elif focal_px is not None:
        f, cx, cy = focal_px, width / 2, height / 2
        values = {"PINHOLE": [f, f, cx, cy], "SIMPLE_PINHOLE": [f, cx, cy], "SIMPLE_RADIAL": [f, cx, cy, 0.0],
                  "RADIAL": [f, cx, cy, 0.0, 0.0], "OPENCV": [f, f, cx, cy, 0.0, 0.0, 0.0, 0.0]}[model]
    else:
        return ""
    return ",".join(f"{v:.6f}" for v in values)


def _extract(db: Path, images: Path, names: list[str], config: PosesConfig, params: str) -> None:
    import pycolmap

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = config.camera_model
    reader.camera_params = params
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.sift.max_num_features = config.max_features
    extraction.sift.peak_threshold = config.peak_threshold
    extraction.sift.estimate_affine_shape = config.affine_shape
    extraction.use_gpu = False
    # images enter the database in name order first: extraction alone numbers them as its threads
    # finish, and the ids order the mapper's choices, so two runs of one clip differed (Spot's
    # median rotation error ranged 0.52-1.05 deg over 12 runs of one video)
    pycolmap.Database.open(str(db)).close()  # creates it
    pycolmap.import_images(db, images, camera_mode=pycolmap.CameraMode.SINGLE, image_names=names, options=reader)
    pycolmap.extract_features(db, images, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)


def _bag_of_words(db: Path, words: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Image names and L2-normalised tf-idf histograms of SIFT words learnt from this clip."""
    import pycolmap
    from scipy.cluster.vq import kmeans2, vq

    database = pycolmap.Database.open(str(db))
    try:
        images = sorted(database.read_all_images(), key=lambda im: im.name)
        descriptors = [np.asarray(database.read_descriptors(im.image_id).data, np.float32) for im in images]
    finally:
        database.close()
    rng = np.random.default_rng(seed)
    pool = np.concatenate([d[rng.permutation(len(d))[:400]] for d in descriptors if len(d)])
    k = min(words, max(2, len(pool) // 20))
    # k-means++ starts on a subsample of 20 points per word: on the whole pool scipy's start costs
    # O(k^2 n), 53 s of a 47-frame capture's matching; random starts were fast but gave loop pairs
    # that cost the global mapper (templeRing, known K: 0.62 deg against 0.28 with this start)
    start = pool[rng.permutation(len(pool))[:20 * k]]
    start, _ = kmeans2(start, k, minit="++", seed=seed)
    centroids, _ = kmeans2(pool, start, minit="matrix", seed=seed)
    hist = np.zeros((len(images), k), np.float64)
    for i, d in enumerate(descriptors):
        if len(d):
            hist[i] = np.bincount(vq(d, centroids)[0], minlength=k)
    idf = np.log(len(images) / np.maximum((hist > 0).sum(0), 1))
    hist = hist * idf
    hist /= np.maximum(np.linalg.norm(hist, axis=1, keepdims=True), 1e-12)
    return [im.name for im in images], hist


def loop_closure_pairs(names: list[str], hist: np.ndarray, per_frame: int, min_gap: int) -> list[tuple[str, str]]:
    """Each frame's `per_frame` most similar frames at least `min_gap` frames away in time."""
    sim = hist @ hist.T
    idx = np.arange(len(names))
    sim[np.abs(idx[:, None] - idx[None, :]) < min_gap] = -1.0
    pairs = set()
    for i in idx:
        for j in np.argsort(-sim[i])[:per_frame]:
            if sim[i, j] > 0:
                pairs.add((min(i, j), max(i, j)))
    return [(names[i], names[j]) for i, j in sorted(pairs)]


def _match(db: Path, workdir: Path, n_images: int, config: PosesConfig) -> dict:
    """Matches every pair COLMAP should see; returns the report's matching entries."""
    import pycolmap

    matching = pycolmap.FeatureMatchingOptions()
    matching.use_gpu = False
    matching.num_threads = config.threads
    # two-view geometry's RANSAC draws a fresh seed per run unless given one (COLMAP's -1)
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = config.seed
    options = {"matching_options": matching, "verification_options": verification, "device": pycolmap.Device.cpu}
    strategy = config.matching
    if strategy == "auto":
        strategy = "exhaustive" if n_images <= config.exhaustive_max_images else "sequential"
    report = {"matching": strategy}
    if strategy == "exhaustive":
        pycolmap.match_exhaustive(db, **options)
        return report
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = config.sequential_overlap
    pycolmap.match_sequential(db, pairing_options=pairing, **options)
    if config.loop_pairs > 0 and n_images > 2 * config.sequential_overlap:
        names, hist = _bag_of_words(db, words=256, seed=config.seed)
        pairs = loop_closure_pairs(names, hist, config.loop_pairs, min_gap=config.sequential_overlap + 1)
        pairs_file = workdir / "loop_pairs.txt"
        pairs_file.write_text("".join(f"{a} {b}\n" for a, b in pairs))
        imported = pycolmap.ImportedPairingOptions()
        imported.match_list_path = pairs_file
        pycolmap.match_image_pairs(db, pairing_options=imported, **options)
        report["loop_pairs"] = len(pairs)
    return report


# ---------------------------------------------------------------------------------------------
# mapping
# ---------------------------------------------------------------------------------------------


def _map(db: Path, images: Path, out: Path, config: PosesConfig, fixed_intrinsics: bool) -> dict:
    """Writes the largest model the mapper finds to `out`; returns {"mapping_attempts": [...],
    "model": True when there is one}.

    COLMAP's incremental mapper can stall after a poor initial pair (measured on a 48-frame
    orbit of Spot through H.264: 1 run in 4 ended with a 2-image model), so when the best model
    leaves frames out the mapper runs again with a relaxed initialisation and the model with the
    most registered frames wins.  "mapping_attempts" records every attempt.
    """
    import pycolmap

    attempts = []
    best = None
    for attempt in range(max(1, config.mapping_attempts)):
        folder = out if attempt == 0 else out.parent / f"{out.name}_attempt{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        if config.mapper == "global":
            options = pycolmap.GlobalPipelineOptions()
            options.random_seed = config.seed + attempt
            options.num_threads = config.threads
            models = pycolmap.global_mapping(db, images, folder, options)
        else:
            options = pycolmap.IncrementalPipelineOptions()
            options.random_seed = config.seed + attempt
            options.num_threads = config.threads
            if fixed_intrinsics:
                options.ba_refine_focal_length = False
                options.ba_refine_extra_params = False
            options.mapper.filter_max_reproj_error = config.filter_max_reprojection_px
            if attempt > 0:  # relaxed start: a closer initial pair and fewer inliers for it
                options.mapper.init_min_tri_angle = max(4.0, options.mapper.init_min_tri_angle / (2 * attempt))
                options.mapper.init_min_num_inliers = max(30, options.mapper.init_min_num_inliers // (2 * attempt))
            if attempt > 0 and attempt == config.mapping_attempts - 1:
                # last resort: a tight filter thins the points that later frames register against
                options.mapper.filter_max_reproj_error = max(4.0, config.filter_max_reprojection_px)
            models = pycolmap.incremental_mapping(db, images, folder, options)
        model = max(models.values(), key=lambda rec: rec.num_reg_images()) if models else None
        registered = 0 if model is None else int(model.num_reg_images())
        attempt_report = {"registered": registered, "models": len(models)}
        if config.mapper == "incremental":
            attempt_report["filter_px"] = options.mapper.filter_max_reproj_error
        attempts.append(attempt_report)
        if model is not None and (best is None or registered > best.num_reg_images()):
            best = model
        if best is not None and best.num_reg_images() >= _num_images(db):
            break
    if best is not None:
        best.write(str(out))
    return {"mapping_attempts": attempts, "model": best is not None}


def _mapped(db: Path, images: Path, workdir: Path, out: Path, config: PosesConfig, fixed_intrinsics: bool,
            report: dict):
    """`_map` in its own process: the model it wrote, or None; its attempts go into `report`."""
    import pycolmap

    mapped = run_step("map", workdir, db=db, images=images, out=out, config=config, fixed_intrinsics=fixed_intrinsics)
    report.setdefault("mapping_attempts", []).extend(mapped["mapping_attempts"])
    return pycolmap.Reconstruction(str(out)) if mapped["model"] else None


def _num_images(db: Path) -> int:
    import pycolmap

    database = pycolmap.Database.open(str(db))
    try:
        return database.num_images()
    finally:
        database.close()


def _model_report(rec, n_images: int, upscale: int) -> dict:
    """Model statistics; reprojection in pixels of the clip's frames, not of the enlarged copies."""
    return {
        "registered": int(rec.num_reg_images()),
        "images": n_images,
        "registered_fraction": round(rec.num_reg_images() / max(n_images, 1), 4),
        "points": int(rec.num_points3D()),
        "mean_reprojection_px": round(float(rec.compute_mean_reprojection_error()) / upscale, 4),
        "mean_track_length": round(float(rec.compute_mean_track_length()), 3),
    }


def _points(rec) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) xyz and (P, 3) uint8 colours of a model's points."""
    pts = list(rec.points3D.values())
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    return np.array([p.xyz for p in pts]), np.array([p.color for p in pts], np.uint8)


def _triangulate_known(db: Path, images: Path, out: Path, w2c: list, names: list[str]) -> dict:
    """Writes a model with the clip's own cameras (ids matching the database) and points
    triangulated from them to `out`."""
    import pycolmap

    database = pycolmap.Database.open(str(db))
    try:
        cameras = database.read_all_cameras()
        db_images = {im.name: im for im in database.read_all_images()}
    finally:
        database.close()
    rec = pycolmap.Reconstruction()
    for cam in cameras:
        rec.add_camera_with_trivial_rig(cam)
    w2c = np.asarray(w2c, np.float64)
    for i, name in enumerate(names):
        im = db_images[name]
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=im.camera_id, image_id=im.image_id),
                                         pycolmap.Rigid3d(w2c[i, :3, :4]))
    out.mkdir(parents=True, exist_ok=True)
    pycolmap.triangulate_points(rec, db, images, out).write(str(out))
    return {}


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------


def estimate_poses(
    clip: Clip,
    workdir: Path,
    config: PosesConfig = PosesConfig(),
    *,
    intrinsics: np.ndarray | None = None,
    focal_px: float | None = None,
    metric_scale: float | None = None,
    status: Callable[[str], None] | None = None,
) -> PosesResult:
    """Cameras for every frame of `clip` that COLMAP can register.

    Args:
        clip: frames; with cameras, they are kept and points are triangulated from them.
        workdir: folder for images/, database.db and sparse/ (the stage folder).
        intrinsics: (3, 3) known K of the frames: a PINHOLE camera held fixed.
        focal_px: a focal length prior (e.g. EXIF) when K is unknown.
        metric_scale: world units per reconstruction unit, instead of "object in radius 1".
        status: called with a short description before each step (for progress display).
    """
    say = status or (lambda text: None)
    if len(clip) < 3:
        raise InputError(f"camera poses need at least 3 frames, got {len(clip)}")
    if not config.filter_max_reprojection_px > 0:
        raise InputError(f"filter_max_reprojection_px must be positive, got {config.filter_max_reprojection_px}")
    if config.threads == 0 or config.threads < -1:
        raise InputError(f"COLMAP threads must be at least 1, or -1 for every core; got {config.threads}")
    workdir = Path(workdir)
    timer = _Timer()
    known = clip.cameras
    if known is not None and intrinsics is None:
        intrinsics = known.K.mean(0)
    if intrinsics is not None and config.camera_model == "SIMPLE_RADIAL":
        config = PosesConfig(**{**asdict(config), "camera_model": "PINHOLE"})
    report: dict = {"config": asdict(config), "frames": len(clip), "known_cameras": known is not None,
                    "intrinsics": "known" if intrinsics is not None else ("exif" if focal_px else "estimated")}
    db, images = workdir / "database.db", workdir / "images"
    upscale = max(1, -(-config.min_feature_side // max(clip.width, clip.height)))
    report["feature_upscale"] = upscale
    if intrinsics is not None:
        intrinsics = np.diag([upscale, upscale, 1.0]) @ intrinsics
    if focal_px is not None:
        focal_px *= upscale
    with timer("write_images"):
        names = _write_images(clip, images, upscale)
    db.unlink(missing_ok=True)  # an earlier run's database would lend this one its old features
    say("extracting SIFT features")
    with timer("features"):
        run_step("extract", workdir, db=db, images=images, names=names, config=config,
                 params=_camera_params(config.camera_model, intrinsics, focal_px, clip.width * upscale,
                                       clip.height * upscale))
    say("matching")
    with timer("matching"):
        report.update(run_step("match", workdir, db=db, workdir=workdir, n_images=len(names), config=config))

    if known is not None:
        if config.refine:
            say("the clip's cameras are known: they are used as given, not refined (refinement is for SfM cameras)")
        report["registered_frames"] = list(range(len(clip)))
        result = _known_camera_result(clip, db, images, workdir, names, config, report, timer, say)
    else:
        say(f"{config.mapper} mapping")
        with timer("mapping"):
            rec = _mapped(db, images, workdir, workdir / "sparse" / "0", config, intrinsics is not None, report)
        result = _sfm_result(clip, rec, names, config, report, metric_scale)
        if result.reconstruction is not None:
            result.reconstruction.write(str(workdir / "sparse" / "0"))
        if config.refine and result.clip is not None and result.problem is None:
            say("refining the cameras against the pixels")
            with timer("refinement"):
                result = _refined(result, config, report, intrinsics is None, say)
    report["seconds"] = timer.seconds
    report["problem"] = result.problem
    return result


def _sfm_result(clip: Clip, rec, names: list[str], config: PosesConfig, report: dict, metric_scale) -> PosesResult:
    if rec is None or rec.num_reg_images() == 0:
        report.update(registered=0, images=len(names), registered_fraction=0.0)
        return PosesResult(None, report, "no two frames could be matched into a model: the frames need more "
                           "texture and overlap (slower motion, more light), or try --matching exhaustive")
    report.update(_model_report(rec, len(names), report["feature_upscale"]))
    cams, reg_names = from_colmap(rec)
    cams = cams.resized(clip.width, clip.height)  # the model may hold enlarged frames
    xyz, _ = _points(rec)
    sim = normalise_world(cams, xyz, metric_scale)
    import pycolmap

    rec.transform(pycolmap.Sim3d(sim.scale, pycolmap.Rotation3d(sim.rotation), sim.translation))
    cams = sim.apply_cameras(cams)
    report["normalisation"] = sim.to_json()
    index = [names.index(n) for n in reg_names]
    report["registered_frames"] = index
    posed = Clip(clip.frames[index], cams, None if clip.masks is None else clip.masks[index],
                 fps=clip.fps, source=clip.source)
    return PosesResult(posed, report, _judge(report, config), rec)


def _refined(result: PosesResult, config: PosesConfig, report: dict, refine_focal: bool,
             say: Callable[[str], None]) -> PosesResult:
    """The SfM clip with cameras refined photometrically; COLMAP's model (sparse/0) is kept as
    COLMAP made it, and transforms.json and the clip carry the refined cameras."""
    from orbitforge.recon.refine import refine_cameras

    def progress(step: int, stats: dict) -> None:
        if step % 250 == 0 or step == config.refine_steps:
            say(f"refining the cameras: step {step}/{config.refine_steps}, PSNR {stats['psnr']:.1f} dB")

    xyz, rgb = _points(result.reconstruction)
    clip = result.clip
    cameras, report["refinement"] = refine_cameras(clip, xyz, rgb, steps=config.refine_steps,
                                                   max_side=config.refine_max_side, refine_focal=refine_focal,
                                                   seed=config.seed, progress=progress)
    refined = Clip(clip.frames, cameras, clip.masks, fps=clip.fps, source=clip.source)
    return PosesResult(refined, report, result.problem, result.reconstruction)


def _known_camera_result(clip, db, images, workdir, names, config, report, timer, say) -> PosesResult:
    import pycolmap

    say("triangulating from the known cameras")
    with timer("triangulation"):
        out = workdir / "sparse" / "0"
        run_step("triangulate", workdir, db=db, images=images, out=out, w2c=clip.cameras.w2c.tolist(), names=names)
        rec = pycolmap.Reconstruction(str(out))
    report.update(_model_report(rec, len(names), report["feature_upscale"]))
    report["normalisation"] = Similarity(1.0, np.eye(3), np.zeros(3)).to_json()
    problem = None
    if report["points"] < 100:
        problem = (f"only {report['points']} points triangulated from the known cameras: the frames may not "
                   "agree with their cameras (3D-inconsistent clip) or lack texture")
    if config.verify_known:
        say(f"checking consistency with {config.mapper} SfM")
        with timer("verify_sfm"):
            sfm = _mapped(db, images, workdir, workdir / "verify" / "0", config, True, report)
        report["verify"] = _verify(sfm, clip.cameras, names, config)
        problem = problem or report["verify"].get("problem")
    return PosesResult(clip, report, problem, rec)


def _verify(sfm, known: Cameras, names: list[str], config: PosesConfig) -> dict:
    """SfM on a clip with known cameras: how many cameras it recovers, and how well."""
    if sfm is None or sfm.num_reg_images() < 3:
        registered = 0 if sfm is None else sfm.num_reg_images()
        return {"registered": registered, "problem": f"SfM registered {registered} of {len(names)} frames: "
                "the clip is not 3D-consistent enough to reconstruct"}
    est, reg_names = from_colmap(sfm)
    index = [names.index(n) for n in reg_names]
    errors = pose_errors(est, known[index])
    out = {"registered": len(index), **errors.summary(config.correct_threshold_deg),
           "rotation_deg": [round(float(e), 4) for e in errors.rotation_deg]}
    right = out[f"cameras_within_{config.correct_threshold_deg:g}_deg"]
    if right < config.min_registered_fraction * len(names):
        out["problem"] = (f"only {right} of {len(names)} cameras were recovered within "
                          f"{config.correct_threshold_deg:g} deg of the truth (SfM found a wrong but self-consistent "
                          "solution, typical of near-symmetric objects): add views or use the known cameras")
    return out


def _judge(report: dict, config: PosesConfig) -> str | None:
    """One line when the result is not good enough to build on."""
    if report["registered_fraction"] < config.min_registered_fraction:
        return (f"only {report['registered']} of {report['images']} frames registered "
                f"({100 * report['registered_fraction']:.0f}%): try slower camera motion, more texture, "
                "--matching exhaustive, or known intrinsics")
    if report["mean_reprojection_px"] > config.max_reprojection_px:
        return (f"mean reprojection error {report['mean_reprojection_px']:.2f} px is too high: "
                "check for moving objects or rolling-shutter blur; known intrinsics help")
    return None


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------


def write_outputs(result: PosesResult, folder: Path, frames_relative: str = "../clip/frames") -> None:
    """report.json always; with cameras also transforms.json (nerfstudio, frames referenced in
    the clip stage), clip.json (so `Clip.load(folder)` gives the posed clip) and camera_path.png.

    The COLMAP model (sparse/0), database.db and the images COLMAP saw are already in `folder`.
    """
    import json

    from orbitforge.cameras import to_transforms_json
    from orbitforge.viewers.preview import camera_path_image

    folder = Path(folder)
    (folder / "report.json").write_text(json.dumps(result.report, indent=2, default=float))
    if result.clip is None:
        return
    index = result.report.get("registered_frames", list(range(len(result.clip))))
    paths = [f"{frames_relative}/{i:05d}.png" for i in index]
    transforms = to_transforms_json(result.clip.cameras, paths)
    transforms["orbitforge_normalisation"] = result.report.get("normalisation")
    (folder / "transforms.json").write_text(json.dumps(transforms, indent=2))
    meta = {"fps": result.clip.fps, "source": result.clip.source, "num_frames": len(result.clip),
            "width": result.clip.width, "height": result.clip.height}
    (folder / "clip.json").write_text(json.dumps(meta, indent=2))
    xyz, rgb = _points(result.reconstruction) if result.reconstruction is not None else (None, None)
    camera_path_image(result.clip.cameras, xyz, rgb).save(folder / "camera_path.png")
