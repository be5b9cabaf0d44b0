"""The fitter's settings: one dataclass, the single source of every default (the CLI reads its defaults from
here, and `headrep fit --config FILE.json` overrides them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from headrep.errors import HeadrepError


#: the data terms `--terms` chooses from (landmarks are always on: the coarse stage needs them)
TERMS = ("landmarks", "normals", "silhouette", "photometric")


@dataclass
class FitConfig:
    resolution: int = 256            # square crop / render size in pixels
    subdiv: int = 1                  # dense upsampling levels of U
    seed: int = 0
    offsets: bool = True             # False: the SMPL-X-only ablation (no D_static, no D_dyn)
    hair_hangs: bool = True          # D_static below the ears turns with the head's yaw only (see
                                     # headrep.model.head; recorded in the rep)
    coarse_steps: int = 300
    detail_epochs: int = 12          # 0: stop after the coarse stage (landmarks only)
    window: int = 8                  # consecutive frames per detail step
    lr_coarse: float = 2e-2
    lr_detail: float = 3e-3
    lr_offsets: float = 2e-4         # metres
    lr_dynamic: float = 5e-4         # metres, D_dyn's Adam step (with dyn_adam_eps below)
    dyn_adam_eps: float = 1e-2       # Adam's eps for D_dyn (gradient units: loss per metre): a gradient below
                                     # it moves a vertex like momentum SGD (step ≈ lr/eps × gradient) instead of
                                     # a full lr-sized step, so pixel noise does not become D_dyn on every
                                     # vertex (synthetic wrinkles, with w_dyn_smooth: correlation 0.04 -> 0.22,
                                     # D_dyn off the wrinkles 0.71 -> 0.07 mm rms)
    static_adam_eps: float = 3e-3    # the same for D_static: Adam's unit steps turned the photometric term's
                                     # pixel noise into a random walk of D_static (started at the synthetic
                                     # truth, 40 epochs: 0.80 mm off on the face at 1e-8, 0.42 mm here; from
                                     # scratch, 100 epochs: 0.89 -> 0.80 mm, D_dyn correlation 0.51 -> 0.55;
                                     # 1e-2 drifts less but slows the normal targets' pull on D_static)
    w_landmarks: float = 1.0
    w_landmarks_detail: float = 20.0  # stage 2: keeps the landmarks where stage 1 put them (0 -> 5: NME 0.023 ->
                                     # 0.013 on 48 frames of WolfgangLanger; 5 -> 20 with the depth term: whole
                                     # clip 0.0180 -> 0.0132, IoU 0.922 -> 0.920, synthetic face error 0.52 ->
                                     # 0.49 mm on each of three clips; 40: NME 0.0100, IoU 0.919, 0.47 mm)
    w_landmarks_depth: float = 1.0   # the detector's relative depth (MediaPipe's z, the same numbers its mesh
                                     # targets are made of) beside the 2D points: 2D points from near-frontal
                                     # views leave the face's depth, hence β, to the prior (synthetic: β half
                                     # its true size, face error 0.80 -> 0.52 mm with w_beta and w_static_mag
                                     # below; WolfgangLanger NME 0.0226 -> 0.0181). MediaPipe's z agrees with a
                                     # landmark-only fit's depth at scale 0.91-1.03, correlation 0.96-0.99
    contour_weight: float = 0.3      # iBUG jaw contour points slide with the view: down-weighted
    w_beta: float = 1e-5             # with the landmarks' depth β is seen; 1e-4 held it at 0.73 of its true
                                     # size (synthetic face error 0.63 mm)
    w_expression: float = 2e-5
    w_jaw: float = 1e-3
    w_neck: float = 1e-2
    w_smooth: float = 2e-2
    w_normal: float = 0.3
    w_depth: float = 0.3
    w_static_mag: float = 1e-3       # per mm² on the face; with the seen β the face's D_static has less to
                                     # make up (1e-4: synthetic face error 0.54 mm)
    static_mag_outside: float = 0.01  # that penalty's weight outside the face (hair, ears, neck: centimetres),
                                     # relative to the face's (0.1 shrank the synthetic hair: its outline's
                                     # distance to the fitted surface 9.8 mm, 6.3 here)
    w_static_lap: float = 3e-2
    static_lap_across: float = 0.1   # weight of D_static's Laplacian edges across the face border: 1 made one
                                     # smooth field of the skin and the hair beside it, and the hair's
                                     # centimetres bent the face's border outward (synthetic: face error
                                     # 0.55 -> 0.52 mm, from the truth with the face's D_static zeroed 0.66 ->
                                     # 0.38); 0 let the hair's lower edge fold beside the jaw (WolfgangLanger)
    w_dyn_mag: float = 1e-3          # the minimal-magnitude penalty on D_dyn
    dyn_penalty: str = "l2"          # "l2": mean |d|² (mm²); "l1": mean |d| (mm), sparse in time
    w_dyn_lap: float = 3e-2
    w_dyn_low: float = 0.0           # the smooth part of D_dyn (what averaging onto the base mesh and
                                     # dyn_low_iterations steps there leave, mm²): shading barely sees a broad
                                     # bulge, so on a synthetic clip whose expressions the model makes exactly
                                     # such D_dyn is noise (at 3: wrinkle correlation 0.55 -> 0.71); on real
                                     # video it is also expression the model cannot make (WolfgangLanger NME
                                     # 0.0226 -> 0.0235), hence off by default
    dyn_low_iterations: int = 4      # base-mesh averaging steps: what spreads wider than ~4 base edges
    w_dyn_smooth: float = 1.0        # D_dyn changes little from one frame to the next (the wrinkles follow
                                     # the expression; per-frame image noise does not): mm² per frame pair
    w_dyn_rank: float = 0.0          # the window's D_dyn as few patterns (nuclear norm, mm; see
                                     # losses.nuclear_norm). Synthetic wrinkles, 0.01: started at the truth
                                     # with all but D_dyn held there, correlation 0.52 -> 0.76 (no temporal
                                     # smoothness); from scratch 0.22 -> 0.38 with w_dyn_smooth 0 on the
                                     # sparse 8-frame clip, 0.18 -> 0.27 with it on a 24-frame clip; but
                                     # WolfgangLanger NME 0.0133 -> 0.0137, single_face 0.0085 -> 0.0088: opt-in
    w_dyn_mean: float = 1e-2         # the window's mean D_dyn is shared geometry: it belongs in D_static
    static_init_mm: float = 0.5      # initial outward D_static outside the face
    checkpoint_every: int = 200
    # what the video supervises (a comma-separated subset of TERMS; terms whose data is missing are skipped)
    terms: str = "landmarks,normals,silhouette,photometric"
    # silhouette: the rendered coverage against the person mask above the neck (what shapes D_static outside
    # the face: hair, ears); first a short D_static-only stage on it, then a term of the detail loss
    w_silhouette: float = 2.0
    silhouette_steps: int = 40       # D_static-only steps on the silhouette before the detail epochs
    w_silhouette_stage: float = 30.0  # the silhouette's weight in that stage, against D_static's regularisers
                                     # (2 -> 30, synthetic hair: the outline's distance to the true surface
                                     # 9.7 -> 5.7 mm, 13.9 without the term; single_face IoU 0.975 -> 0.979,
                                     # NME unchanged; the detail loss keeps w_silhouette, which moves the face)
    w_fold: float = 10.0             # that stage: faces turned > 60° from the head without offsets pay (the
                                     # outline's pull had folded WolfgangLanger's hair over itself by her ear)
    silhouette_frames: int = 8       # frames per such step: from each of this many stretches of the clip the
                                     # one whose crop shows most of the head (4 spread evenly were all frames
                                     # whose crown WolfgangLanger's frame edge cuts: it grew into a point)
    silhouette_downscale: int = 2    # rendered at R / this (an outline needs no full resolution)
    lr_static_silhouette: float = 5e-3   # Adam step on the smooth parameterisation (see silhouette.SmoothField)
    silhouette_smoothing: float = 40.0   # λ of (I + λL)⁻¹: how far one outline vertex's pull spreads
    # the hanging hair's swing (one rotation per frame, headrep.model.head): fitted in the detail epochs, where
    # the silhouette pulls on it, when the hair hangs. WolfgangLanger: head IoU 0.943 -> 0.959 (level frames
    # 0.947 -> 0.961, tilted 0.924 -> 0.946), NME 0.0133 -> 0.0131; swings 18° median, 25° at the 95th
    # percentile. lr 0.06 with w_swing_smooth 0.3 read 0.961, swinging up to 51°
    lr_swing: float = 0.03           # radians per step; 0: the hair hangs straight on every frame
    w_swing_mag: float = 0.01        # per rad² of swing
    w_swing_smooth: float = 1.0      # per rad² of change between consecutive frames
    # photometric: albedo (static, per vertex) × SH shading (per frame) against the crop over visible skin
    w_photometric: float = 2.0
    photometric_eps: float = 0.01    # Charbonnier: sqrt(r² + eps²) in [0,1] colour units
    photometric_outlier: float = 3.0  # pixels whose residual exceeds this × the frame's median are occluders
    w_albedo_lap: float = 1e-2       # albedo smoothness on the mesh (no shading baked into it)
    w_light_smooth: float = 1e-2     # per-frame lights change slowly
    w_light_white: float = 1e-3      # lights close to white (colour belongs to the albedo)
    lr_albedo: float = 1e-3          # slower than the geometry: shading that comes and goes must reach D_dyn
                                     # before the albedo cancels it (1e-2: the synthetic clip's geometry kept
                                     # its wrinkles on every frame and the albedo held their shading reversed,
                                     # gain -1.14 on the wrinkle pattern; here 0.00, 0.31 and 0.29 on the
                                     # three clips; WolfgangLanger NME and IoU unchanged)
    lr_light: float = 1e-2
    occluded_frame: float = 0.7      # a frame whose face oval is covered more than this is left out (interpolated)

    def __post_init__(self):
        self.term_list()  # an unknown term name fails here, before any work

    def term_list(self) -> tuple[str, ...]:
        """The chosen data terms, validated (HeadrepError for an unknown name or without landmarks)."""
        names = tuple(t.strip() for t in str(self.terms).split(",") if t.strip())
        unknown = [t for t in names if t not in TERMS]
        if unknown:
            raise HeadrepError(f"unknown fitting term(s) {', '.join(unknown)}; choose from {', '.join(TERMS)}")
        if "landmarks" not in names:
            raise HeadrepError("the terms must include landmarks (the coarse stage fits them)")
        return names

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "the configuration") -> "FitConfig":
        """A config from a dict; unknown keys are an error naming them (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HeadrepError(f"{where}: unknown FitConfig key(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "FitConfig":
        """A config from a JSON object file (any subset of the fields; the rest keep their defaults)."""
        from headrep.io import read_json_object

        return cls.from_dict(read_json_object(path, "FitConfig fields"), str(path))
