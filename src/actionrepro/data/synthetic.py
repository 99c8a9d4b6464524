"""Synthetic UCF101/HMDB51 look-alikes, written in the exact official archive formats.

Why: the demo and the tests must run the very same extract -> splits -> decode -> train code as the
real datasets, on a laptop, offline. So this module writes `UCF101.rar`,
`UCF101TrainTestSplits-RecognitionTask.zip`, `hmdb51_org.rar` (a rar of per-class rars) and
`test_train_splits.rar` with the real member names, list formats (CRLF, 1-based labels, the
HandstandPushups/HandStand quirk, HMDB's 0/1/2 ids with a trailing space, awkward file names) and
real MPEG-4 Part 2 AVI videos.

The content is a probe of temporal modelling: classes are defined by motion, and classes come in
*reversal pairs* whose videos are exact time-reversals of each other (a forward clip written in
reverse frame order). A pair shares one object appearance, so appearance tells the pair and only
frame order tells the class: a model that ignores order is at chance within a pair. The pair motions
(rise/sink, grow/shrink, fade in/out, reveal/conceal) survive horizontal flips and multi-scale crops
(nothing left/right or rotational). Classes beyond the pairs get time-symmetric motions (sway,
blink, pulse) and their own appearance. Per-video randomness (background, position, size, speed,
colour jitter, phase) comes from the seed, so the same seed gives the same bytes.
"""

from __future__ import annotations

import colorsys
import io
import json
import logging
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from actionrepro.errors import ConfigError
from actionrepro.io import atomic_path, atomic_write_json, file_digest

log = logging.getLogger(__name__)

KINDS = ("ucf101", "hmdb51")
_KIND_ID = {"ucf101": 101, "hmdb51": 51}
META_NAME = "synth_meta.json"

UCF_VIDEOS_ARCHIVE = "UCF101.rar"
UCF_SPLITS_ARCHIVE = "UCF101TrainTestSplits-RecognitionTask.zip"
UCF_VIDEO_ROOT = "UCF-101"
UCF_LIST_DIR = "ucfTrainTestlist"
HMDB_VIDEOS_ARCHIVE = "hmdb51_org.rar"
HMDB_SPLITS_ARCHIVE = "test_train_splits.rar"
HMDB_SPLIT_DIR = "testTrainMulti_7030_splits"

# The 101 UCF101 classes in classInd.txt order (case-insensitive alphabetical, as published).
UCF101_CLASSES = (
    "ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch "
    "Basketball BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles "
    "BodyWeightSquats Bowling BoxingPunchingBag BoxingSpeedBag BreastStroke BrushingTeeth "
    "CleanAndJerk CliffDiving CricketBowling CricketShot CuttingInKitchen Diving Drumming Fencing "
    "FieldHockeyPenalty FloorGymnastics FrisbeeCatch FrontCrawl GolfSwing Haircut Hammering "
    "HammerThrow HandstandPushups HandstandWalking HeadMassage HighJump HorseRace HorseRiding "
    "HulaHoop IceDancing JavelinThrow JugglingBalls JumpingJack JumpRope Kayaking Knitting LongJump "
    "Lunges MilitaryParade Mixing MoppingFloor Nunchucks ParallelBars PizzaTossing PlayingCello "
    "PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano PlayingSitar PlayingTabla "
    "PlayingViolin PoleVault PommelHorse PullUps Punch PushUps Rafting RockClimbingIndoor "
    "RopeClimbing Rowing SalsaSpin ShavingBeard Shotput SkateBoarding Skiing Skijet SkyDiving "
    "SoccerJuggling SoccerPenalty StillRings SumoWrestling Surfing Swing TableTennisShot TaiChi "
    "TennisSwing ThrowDiscus TrampolineJumping Typing UnevenBars VolleyballSpiking WalkingWithDog "
    "WallPushups WritingOnBoard YoYo"
).split()
# The real archive's quirk: folder HandstandPushups, files v_HandStandPushups_gXX_cYY.avi.
UCF_FILE_STEM = {"HandstandPushups": "HandStandPushups"}
QUIRK_CLASS = "HandstandPushups"

# The 51 HMDB51 classes, alphabetical (the convention: HMDB51 has no official class index).
HMDB51_CLASSES = (
    "brush_hair cartwheel catch chew clap climb climb_stairs dive draw_sword dribble drink eat "
    "fall_floor fencing flic_flac golf handstand hit hug jump kick kick_ball kiss laugh pick pour "
    "pullup punch push pushup ride_bike ride_horse run shake_hands shoot_ball shoot_bow shoot_gun "
    "sit situp smile smoke somersault stand swing_baseball sword sword_exercise talk throw turn "
    "walk wave"
).split()
# Source-film stems in HMDB style; the first ones carry the characters that break naive tools.
HMDB_TITLES = (
    "#20_Rhythm", "Glory_&_Honor!_[HD]_(part 2)", "Bruce_Lee's_Fist_of_Fury", "#122_Cleaning_Up",
    "Kill_Bill_(Vol._1)", "Rush_Hour_[Trailer]", "Tom_&_Jerry_Show", "My Holiday Video",
    "Whoa!_Amazing_Moves", "American_History_X", "Veoh_Alpha_Dog_1", "50_FIRST_DATES",
    "April_09", "THE_PROTECTOR", "Fellowship_5", "LONGESTYARD", "faith_rewarded", "Prelinger_HabitPat",
)

# Reversal-pair motions (forward member; the partner plays it backwards) and time-symmetric ones.
PAIR_MOTIONS = ("rise", "grow", "fade_in", "reveal")
REVERSED_NAME = {"rise": "sink", "grow": "shrink", "fade_in": "fade_out", "reveal": "conceal"}
UNPAIRED_MOTIONS = ("sway", "blink", "pulse")
SHAPES = ("disk", "square", "triangle", "cross", "ring", "diamond", "bar", "frame")  # all mirror-symmetric
HUES = 13  # palette size; (shape, hue) = (i % 8, i % 13) is unique for i < 104

QSCALE = 4          # fixed MPEG-4 quantiser: no rate control, deterministic sizes
GOP = 12            # I-frame every 12 frames, P-frames between (no B-frames), like common Xvid AVIs
TRUNCATE_AT = 0.4   # truncated corrupt files keep their headers and this fraction of the rest


@dataclass(frozen=True)
class SynthClass:
    """One synthetic class: its name, 0-based label and what defines it."""

    name: str
    label: int
    motion: str          # forward motion (PAIR_MOTIONS or UNPAIRED_MOTIONS)
    reverse: bool        # videos are the forward motion played backwards
    appearance: int      # index into (SHAPES x HUES); shared within a reversal pair
    pair: int | None     # reversal-pair index, None for unpaired classes

    @property
    def motion_name(self) -> str:
        return REVERSED_NAME[self.motion] if self.reverse else self.motion


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown synthetic dataset kind {kind!r}; choose one of {', '.join(KINDS)}")


def class_names(kind: str, classes: int) -> list[str]:
    """Real class names for a synthetic dataset of `classes` classes, in official label order.

    UCF101: the first names of classInd.txt, always including HandstandPushups (for its file-name
    quirk). HMDB51: the first names alphabetically.
    """
    _check_kind(kind)
    pool = UCF101_CLASSES if kind == "ucf101" else HMDB51_CLASSES
    if not 2 <= classes <= len(pool):
        raise ConfigError(f"synth.{kind}.classes = {classes}: must be between 2 and {len(pool)} "
                          f"(the real {kind} has {len(pool)} classes)")
    if kind == "hmdb51":
        return list(pool[:classes])
    names = [c for c in pool if c != QUIRK_CLASS][:classes - 1] + [QUIRK_CLASS]
    return sorted(names, key=pool.index)


def class_specs(kind: str, classes: int) -> list[SynthClass]:
    """Classes with their motions: consecutive labels form reversal pairs, up to one per pair motion."""
    names = class_names(kind, classes)
    n_pairs = min(classes // 2, len(PAIR_MOTIONS))
    specs = []
    for i, name in enumerate(names):
        if i < 2 * n_pairs:
            p = i // 2
            specs.append(SynthClass(name, i, PAIR_MOTIONS[p], bool(i % 2), p, p))
        else:
            j = i - 2 * n_pairs
            specs.append(SynthClass(name, i, UNPAIRED_MOTIONS[j % len(UNPAIRED_MOTIONS)], False, n_pairs + j, None))
    return specs


def reversal_pairs(kind: str, classes: int) -> list[tuple[str, str]]:
    """(forward class, reversed class) name pairs: same frames, opposite order."""
    specs = class_specs(kind, classes)
    return [(a.name, b.name) for a, b in zip(specs[0::2], specs[1::2]) if a.pair is not None and a.pair == b.pair]


def appearance_of(index: int) -> tuple[str, float]:
    """(shape, base hue in degrees) of appearance `index`."""
    return SHAPES[index % len(SHAPES)], (index % HUES) * 360.0 / HUES


# ---------------------------------------------------------------------------------------------
# Rendering


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A distance-like field in object units: <= 1 inside the shape (v points down)."""
    au, av_ = np.abs(u), np.abs(v)
    if shape == "disk":
        return np.hypot(u, v)
    if shape == "square":
        return np.maximum(au, av_) / 0.85
    if shape == "triangle":  # apex up
        return np.maximum(v / 0.75, 1 + au - 0.62 * (v + 1.05))
    if shape == "cross":
        return np.minimum(np.maximum(au / 0.38, av_), np.maximum(au, av_ / 0.38))
    if shape == "ring":
        rho = np.hypot(u, v)
        return np.maximum(rho, 1.55 - rho)
    if shape == "diamond":
        return (au + av_) / 1.25
    if shape == "bar":
        return np.maximum(au / 1.15, av_ / 0.45)
    if shape == "frame":
        ch = np.maximum(au, av_) / 0.9
        return np.maximum(ch, 1.5 - ch)
    raise ValueError(f"unknown shape {shape!r}")


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Static, low-saturation textured background (H, W, 3) float32: smooth waves + fine grain."""
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = 1.0 / max(height, width)
    waves = np.zeros((height, width), np.float32)
    for _ in range(3):
        fy, fx = rng.uniform(1.0, 6.0, 2) * rng.choice([-1.0, 1.0], 2) * scale * 2 * np.pi
        waves += np.sin(fy * gy + fx * gx + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    grain = rng.standard_normal((height, width), dtype=np.float32)
    grain = (grain + np.roll(grain, 1, 0) + np.roll(grain, 1, 1) + np.roll(grain, (1, 1), (0, 1))) / 2
    luma = rng.uniform(70, 150) + 12 * waves + 5 * grain
    tint = rng.uniform(-12, 12, 3).astype(np.float32)
    return luma[..., None] + tint


def render_clip(motion: str, appearance: int, width: int, height: int, frames: int,
                rng: np.random.Generator, reverse: bool = False) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 RGB of one clip; `reverse` returns the same clip backwards.

    Every random draw happens before the motion is applied and in a fixed order, so a forward and a
    reversed class rendered from equal generators give exactly mirrored frame sequences.
    """
    shape, hue = appearance_of(appearance)
    bg = _background(rng, height, width)
    m = float(min(height, width))
    h = (hue + rng.uniform(-8, 8)) % 360 / 360
    colour = np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.65, 0.95), rng.uniform(0.8, 1.0)), np.float32) * 255
    radius = rng.uniform(0.15, 0.2) * m
    cx0 = rng.uniform(0.38, 0.62) * width
    cy0 = rng.uniform(0.42, 0.58) * height
    duration = rng.uniform(0.5, 0.85)
    start = rng.uniform(0, 1 - duration)
    travel = rng.uniform(0.32, 0.45) * height
    growth = rng.uniform(2.0, 2.6)
    amplitude = rng.uniform(0.12, 0.2) * width
    cycles = rng.uniform(1.0, 2.0)
    blink_cycles = rng.uniform(2.0, 3.5)
    phase = rng.uniform(0, 2 * np.pi)
    opacity = rng.uniform(0.9, 1.0)
    noise_sigma = 2.0                                          # per-frame sensor noise (std)

    tau = np.linspace(0.0, 1.0, frames)
    prog = np.clip((tau - start) / duration, 0.0, 1.0)         # 0 -> 1 over the motion
    wave = np.sin(2 * np.pi * cycles * tau + phase)
    cx = np.full(frames, cx0)
    cy = np.full(frames, cy0)
    r = np.full(frames, radius)
    alpha = np.full(frames, opacity)
    thr = None
    if motion == "rise":
        cy = cy0 + travel / 2 - prog * travel
    elif motion == "grow":
        r = radius / growth * (1 + (growth - 1) * prog) * 1.3
    elif motion == "fade_in":
        alpha = opacity * prog
    elif motion == "reveal":
        thr = 1.05 - 2.1 * prog                               # visible where v >= thr (from the bottom up)
    elif motion == "sway":
        cx = width / 2 + amplitude * wave
    elif motion == "blink":
        alpha = opacity * np.clip(4 * np.sin(2 * np.pi * blink_cycles * tau + phase) + 0.5, 0, 1)
    elif motion == "pulse":
        r = radius * (1 + 0.3 * wave)
    else:
        raise ValueError(f"unknown motion {motion!r}")

    gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        frame = bg.copy()
        # Only the object's box changes: every shape lies within 1.25 radii, plus the soft edge.
        half = 1.3 * r[t] + 2
        y0, y1 = max(0, int(cy[t] - half)), min(height, int(np.ceil(cy[t] + half)) + 1)
        x0, x1 = max(0, int(cx[t] - half)), min(width, int(np.ceil(cx[t] + half)) + 1)
        if y0 < y1 and x0 < x1:
            u = (gx[y0:y1, x0:x1] - cx[t]) / r[t]
            v = (gy[y0:y1, x0:x1] - cy[t]) / r[t]
            cover = np.clip((1 - _shape_distance(shape, u, v)) * r[t] + 0.5, 0, 1)   # ~1 px soft edge
            if thr is not None:
                cover *= np.clip((v - thr[t]) * r[t] + 0.5, 0, 1)
            a = (alpha[t] * cover)[..., None]
            frame[y0:y1, x0:x1] = bg[y0:y1, x0:x1] * (1 - a) + colour * a
        noise = rng.random(frame.shape, dtype=np.float32)          # uniform: 4x cheaper than normal
        noise -= 0.5
        noise *= noise_sigma * np.float32(np.sqrt(12))
        frame += noise
        frame += 0.5
        out[t] = np.clip(frame, 0, 255, out=frame)
    return out[::-1].copy() if reverse else out


def encode_avi(frames: np.ndarray, fps: int) -> bytes:
    """MPEG-4 Part 2 (yuv420p) in AVI, fixed quantiser, one thread, bit-exact: same frames, same bytes."""
    t, height, width, _ = frames.shape
    buf = io.BytesIO()
    with av.open(buf, "w", format="avi", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps, options={"flags": "+bitexact"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        cc = stream.codec_context
        cc.thread_count = 1
        cc.gop_size = GOP
        cc.max_b_frames = 0
        cc.qscale = True           # fixed quantiser: with frame quality unset, q = qmin = qmax
        cc.qmin = cc.qmax = QSCALE
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def _video_rng(seed: int, kind: str, label: int, index: int) -> np.random.Generator:
    """The generator of one video: depends only on (seed, kind, class, index within class)."""
    return np.random.default_rng(np.random.SeedSequence([seed, _KIND_ID[kind], label, index]))


def clip_frames(spec: SynthClass, kind: str, seed: int, index: int, synth: dict) -> np.ndarray:
    """The raw frames of video `index` of class `spec` (before encoding)."""
    # Each class has its own videos; a reversed class's are forward renders of the pair's motion
    # and appearance, played backwards, so the two classes' frame distributions are identical.
    rng = _video_rng(seed, kind, spec.label, index)
    return render_clip(spec.motion, spec.appearance, synth["width"], synth["height"], synth["frames"], rng,
                       reverse=spec.reverse)


# ---------------------------------------------------------------------------------------------
# Corruption


def _corrupt(data: bytes, how: str, rng: np.random.Generator) -> bytes:
    """Keep the AVI headers (up to the 'movi' list) and then 40% of the rest ("truncated", like an
    interrupted copy) or the same length of random bytes ("garbage")."""
    movi = data.find(b"movi")
    keep = movi + 4 if movi > 0 else min(len(data), 512)
    if how == "truncated":
        return data[:keep + int((len(data) - keep) * TRUNCATE_AT)]
    return data[:keep] + rng.integers(0, 256, len(data) - keep, dtype=np.uint8).tobytes()


def _corrupt_plan(seed: int, kind: str, total: int, fraction: float) -> dict[int, str]:
    """Which videos (global index) get corrupted and how: round(fraction * total), kinds alternating."""
    count = int(np.floor(fraction * total + 0.5))
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KIND_ID[kind], 1_000_000]))
    chosen = sorted(rng.choice(total, size=count, replace=False).tolist()) if count else []
    return {idx: ("truncated" if k % 2 == 0 else "garbage") for k, idx in enumerate(chosen)}


# ---------------------------------------------------------------------------------------------
# Dataset layouts


@dataclass(frozen=True)
class _Video:
    spec: SynthClass
    index: int           # within its class
    path: str            # relative to the extracted dataset root
    video_id: str        # what the splits step will call it


def ucf_videos(specs: list[SynthClass], synth: dict) -> list[_Video]:
    """UCF-101/<Class>/v_<Stem>_gGG_cCC.avi for every class, group and clip, in archive order."""
    out = []
    for spec in specs:
        stem = UCF_FILE_STEM.get(spec.name, spec.name)
        i = 0
        for g in range(1, synth["groups"] + 1):
            for c in range(1, synth["clips_per_group"] + 1):
                entry = f"{spec.name}/v_{stem}_g{g:02d}_c{c:02d}"
                out.append(_Video(spec, i, f"{UCF_VIDEO_ROOT}/{entry}.avi", entry))
                i += 1
    return out


def ucf_test_groups(split: int) -> range:
    """The official rule: split k tests groups 7(k-1)+1 .. 7k; all other groups train."""
    return range(7 * (split - 1) + 1, 7 * split + 1)


def ucf_split_lists(specs: list[SynthClass], synth: dict) -> dict[str, bytes]:
    """classInd.txt, trainlist0k.txt ("Class/file.avi label", 1-based), testlist0k.txt; CRLF."""
    files = {"classInd.txt": "".join(f"{s.label + 1} {s.name}\r\n" for s in specs)}
    videos = ucf_videos(specs, synth)
    for k in (1, 2, 3):
        test_groups = set(ucf_test_groups(k))
        train, test = [], []
        for v in videos:
            group = int(v.video_id.rsplit("_g", 1)[1][:2])
            if group in test_groups:
                test.append(f"{v.video_id}.avi\r\n")
            else:
                train.append(f"{v.video_id}.avi {v.spec.label + 1}\r\n")
        files[f"trainlist{k:02d}.txt"] = "".join(train)
        files[f"testlist{k:02d}.txt"] = "".join(test)
    return {name: text.encode("ascii") for name, text in files.items()}


def hmdb_video_names(spec: SynthClass, count: int, rng: np.random.Generator) -> list[str]:
    """HMDB-style names `<source>_<class>_<body>_<camera>_<people>_<view>_<quality>_<n>.avi`."""
    names = []
    for i in range(count):
        title = HMDB_TITLES[(i + spec.label) % len(HMDB_TITLES)]
        n = i // len(HMDB_TITLES)
        body = rng.choice(["f", "h", "u", "l"])
        camera = rng.choice(["cm", "nm"])
        people = rng.choice(["np1", "np2", "np3"])
        view = rng.choice(["fr", "ba", "le", "ri"])
        quality = rng.choice(["goo", "med", "bad"])
        names.append(f"{title}_{spec.name}_{body}_{camera}_{people}_{view}_{quality}_{n}.avi")
    return names


def hmdb_assignments(spec: SynthClass, synth: dict, seed: int, count: int) -> list[list[int]]:
    """Per split 1..3, an id per video (1 train, 2 test, 0 unused) with the exact per-class counts.

    Each split draws a different assignment when the class has more than one possible.
    """
    base = [1] * synth["train_per_class"] + [2] * synth["test_per_class"] + [0] * synth["unused_per_class"]
    assert len(base) == count
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KIND_ID["hmdb51"], spec.label, 1_000_001]))
    out: list[list[int]] = []
    for _ in range(3):
        for _attempt in range(100):
            ids = rng.permutation(base).tolist()
            if ids not in out:
                break
        out.append(ids)
    return out


def hmdb_layout(specs: list[SynthClass], synth: dict, seed: int) -> tuple[list[_Video], dict[str, bytes]]:
    """Videos `<class>/<name>.avi` and `<class>_test_split<k>.txt` files ("name.avi id \\n")."""
    count = synth["train_per_class"] + synth["test_per_class"] + synth["unused_per_class"]
    videos, split_files = [], {}
    for spec in specs:
        rng = np.random.default_rng(np.random.SeedSequence([seed, _KIND_ID["hmdb51"], spec.label, 1_000_002]))
        names = hmdb_video_names(spec, count, rng)
        for i, name in enumerate(names):
            videos.append(_Video(spec, i, f"{spec.name}/{name}", f"{spec.name}/{name[:-4]}"))
        order = sorted(range(count), key=lambda i: names[i])
        for k, ids in enumerate(hmdb_assignments(spec, synth, seed, count), start=1):
            text = "".join(f"{names[i]} {ids[i]} \n" for i in order)
            split_files[f"{spec.name}_test_split{k}.txt"] = text.encode("utf-8")
    return videos, split_files


# ---------------------------------------------------------------------------------------------
# Archives


def _write_zip(path: Path, members: list[tuple[str, bytes | None]]) -> None:
    """A deterministic zip: fixed timestamps, attributes and host; None data = a directory entry."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=(2013, 1, 1, 0, 0, 0))
                info.create_system = 0
                if data is None:
                    info.external_attr = 0x10
                    zf.writestr(info, b"")
                else:
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0x20
                    zf.writestr(info, data)


def _encode_videos(kind: str, videos: list[_Video], synth: dict,
                   seed: int) -> tuple[list[tuple[str, bytes]], list[dict]]:
    """Render and encode every video, corrupting the planned ones; members and the corruption list."""
    plan = _corrupt_plan(seed, kind, len(videos), synth["corrupt_fraction"])
    members, corrupted = [], []
    for g, video in enumerate(tqdm(videos, desc=f"synth {kind}", unit="video", disable=None)):
        data = encode_avi(clip_frames(video.spec, kind, seed, video.index, synth), synth["fps"])
        if g in plan:
            rng = np.random.default_rng(np.random.SeedSequence([seed, _KIND_ID[kind], 1_000_003, g]))
            data = _corrupt(data, plan[g], rng)
            corrupted.append({"video_id": video.video_id, "path": video.path, "corruption": plan[g]})
        members.append((video.path, data))
    return members, corrupted


def _check_synth(kind: str, synth: dict) -> None:
    need = {"ucf101": ("classes", "groups", "clips_per_group"),
            "hmdb51": ("classes", "train_per_class", "test_per_class", "unused_per_class")}[kind]
    missing = [k for k in need + ("width", "height", "fps", "frames", "corrupt_fraction") if k not in synth]
    if missing:
        raise ConfigError(f"synth.{kind} lacks key(s) {', '.join(missing)} "
                          "(see src/actionrepro/schemas/params.schema.json)")
    if synth["width"] % 2 or synth["height"] % 2:
        raise ConfigError(f"synth.{kind}: width and height must be even for yuv420p video, "
                          f"got {synth['width']}x{synth['height']}")
    if kind == "ucf101" and synth["groups"] < 21:
        raise ConfigError(f"synth.ucf101.groups = {synth['groups']}: the official splits test groups 1-21, need >= 21")


def write_archives(kind: str, out_dir: str | Path, synth: dict, seed: int) -> list[Path]:
    """Write the `kind` dataset's official archives into `out_dir`; return their paths.

    Also writes `synth_meta.json` beside them (classes, motions, reversal pairs, corrupted videos,
    params, seed, archive sha256), outside the archives so those stay in the official format.
    """
    _check_kind(kind)
    _check_synth(kind, synth)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = class_specs(kind, synth["classes"])
    if kind == "ucf101":
        videos = ucf_videos(specs, synth)
        members, corrupted = _encode_videos(kind, videos, synth, seed)
        videos_archive = out_dir / UCF_VIDEOS_ARCHIVE
        _write_rar(videos_archive, members)
        splits_archive = out_dir / UCF_SPLITS_ARCHIVE
        lists = ucf_split_lists(specs, synth)
        _write_zip(splits_archive, [(f"{UCF_LIST_DIR}/", None)]
                   + [(f"{UCF_LIST_DIR}/{name}", data) for name, data in sorted(lists.items())])
    else:
        videos, split_files = hmdb_layout(specs, synth, seed)
        members, corrupted = _encode_videos(kind, videos, synth, seed)
        videos_archive = out_dir / HMDB_VIDEOS_ARCHIVE
        by_class: dict[str, list[tuple[str, bytes]]] = {}
        for name, data in members:
            by_class.setdefault(name.split("/", 1)[0], []).append((name, data))
        with tempfile.TemporaryDirectory(prefix="actionrepro-synth-") as tmp:
            inner = []
            for cls, cls_members in by_class.items():
                path = Path(tmp) / f"{cls}.rar"
                _write_rar(path, cls_members)
                inner.append((f"{cls}.rar", path.read_bytes()))
            _write_rar(videos_archive, inner)
        splits_archive = out_dir / HMDB_SPLITS_ARCHIVE
        _write_rar(splits_archive, [(f"{HMDB_SPLIT_DIR}/{name}", data) for name, data in sorted(split_files.items())])
    archives = [videos_archive, splits_archive]
    meta = {
        "dataset": f"synth_{kind}",
        "kind": kind,
        "seed": seed,
        "params": dict(synth),
        "classes": [dict(asdict(s), motion_name=s.motion_name, shape=appearance_of(s.appearance)[0],
                         hue=appearance_of(s.appearance)[1]) for s in specs],
        "reversal_pairs": [list(p) for p in reversal_pairs(kind, synth["classes"])],
        "videos": len(videos),
        "corrupted": corrupted,
        "archives": {p.name: file_digest(p) for p in archives},
    }
    atomic_write_json(out_dir / META_NAME, meta)
    log.info("synth %s: %d classes, %d videos (%d corrupted) -> %s", kind, len(specs), len(videos),
             len(corrupted), ", ".join(str(p) for p in archives))
    return archives


def _write_rar(path: Path, members: list[tuple[str, bytes]]) -> None:
    from actionrepro.data.rar import write_stored_rar

    write_stored_rar(path, members)


def read_meta(out_dir: str | Path) -> dict:
    """The `synth_meta.json` written by write_archives into `out_dir`."""
    return json.loads((Path(out_dir) / META_NAME).read_text())


def corrupt_videos(out_dir: str | Path) -> list[dict]:
    """The videos written corrupt: [{video_id, path (relative to the extracted root), corruption}]."""
    return read_meta(out_dir)["corrupted"]
