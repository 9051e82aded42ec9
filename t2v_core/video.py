"""Writing frames to video files with the ffmpeg that ships inside ``imageio-ffmpeg``."""
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import write_files
from .settings import DEFAULT


@dataclass(frozen=True)
class Codec:
    """A video codec as the pack writes it, in yuv420p (browsers, QuickTime and VLC play it)."""
    label: str  # as people write it
    encoder: str  # ffmpeg's encoder
    crf: int  # the default quality
    crf_max: int  # the encoder's crf range is 0 to this, as in core Save Video
    options: tuple = ()  # the encoder's further options
    encoder_label: str = ""  # the encoder by name, where the codec has several in common use


@dataclass(frozen=True)
class Container:
    muxer: str  # ffmpeg's
    codecs: tuple  # the codecs it holds, its default first
    about: str  # what it is, in a line
    options: tuple = ()  # the muxer's options


# The crf defaults are the pack's of before for H.264 and VP9, and core Save Video's for AV1 (SVT-AV1 at core Save
# WEBM's preset).
VIDEO_CODECS = {
    "h264": Codec("H.264", "libx264", 17, 51),
    "vp9": Codec("VP9", "libvpx-vp9", 30, 63, ("-b:v", "0", "-row-mt", "1")),
    "av1": Codec("AV1", "libsvtav1", 30, 63, ("-preset", "6"), encoder_label="SVT-AV1"),
}
CONTAINERS = {  # the first is the default format
    "mp4": Container("mp4", ("h264", "av1"), "H.264 yuv420p, plays everywhere",
                     ("-movflags", "+faststart+use_metadata_tags")),  # the index up front
    "webm": Container("webm", ("vp9", "av1"), "VP9"),
    "gif": Container("gif", (), "no metadata", ("-vf", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-loop", "0")),
    "mkv": Container("matroska", ("h264", "vp9", "av1"), "H.264, as core Save Video's mkv"),
}
FORMATS = tuple(CONTAINERS)
CODECS = ("auto", *VIDEO_CODECS)


def encoder_of(fmt, codec=None):
    """The codec ``fmt`` is written with (``auto`` or None: the format's own), or None for a format without one."""
    held = CONTAINERS[fmt].codecs if fmt in CONTAINERS else ()
    return held[0] if held and codec in (None, "auto") else codec if codec in held else None


def codec_error(fmt, codec, crf=None):
    """None, or a message naming ``codec`` when ``fmt`` cannot hold it (``auto``: the format's default), or ``crf``
    when it is beyond that codec's range (formats without a codec ignore it)."""
    held = CONTAINERS[fmt].codecs if fmt in CONTAINERS else ()
    if codec not in (None, "auto", *held):
        expected = ", ".join(("auto", *held)) if held else f"auto (a {fmt} has no codec to choose)"
        return f"codec: {codec!r} does not fit the {fmt} format; expected {expected}"
    encoder = encoder_of(fmt, codec)
    crf_max = VIDEO_CODECS[encoder].crf_max if encoder else None
    if encoder and crf is not None and not 0 <= crf <= crf_max:
        return (f"crf: {crf} is beyond {encoder}'s range 0-{crf_max} (the {fmt} format with codec "
                f"{codec or 'auto'}); give a crf in that range or a codec that takes {crf}")
    return None


def encoder_options(fmt, codec=None, crf=None):
    """ffmpeg's output options for ``codec`` in ``fmt``; ``crf`` replaces the codec's default (None: kept)."""
    error = codec_error(fmt, codec, crf)
    if error:
        raise ValueError(error)
    container, encoder = CONTAINERS[fmt], encoder_of(fmt, codec)
    if encoder is None:
        return list(container.options)
    c = VIDEO_CODECS[encoder]
    return ["-c:v", c.encoder, "-pix_fmt", "yuv420p", "-crf", str(c.crf if crf is None else crf), *c.options,
            *container.options]


def to_uint8(frames):
    """[F, H, W, 3] floats in 0..1 -> uint8, truncating as the original pipeline does."""
    frames = frames.detach().float().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    return (np.clip(frames, 0, 1) * 255).astype(np.uint8)


def _ffmetadata(metadata):
    def escape(text):
        return "".join("\\" + c if c in "=;#\\\n" else c for c in str(text))

    return ";FFMETADATA1\n" + "".join(f"{escape(k)}={escape(v)}\n" for k, v in metadata.items())


def video_frames(frames, fmt):
    """[F, H, W, 3] uint8 frames ready for ``fmt``: edge-padded to even sizes where yuv420p needs them."""
    frames = frames if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 else to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be [F, H, W, 3] with F >= 1, got shape {tuple(frames.shape)}")
    if fmt != "gif" and (frames.shape[1] % 2 or frames.shape[2] % 2):  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frames)


def encode(frames, path, fps, fmt, options, metadata_file=None, name=None):
    """Run ffmpeg once: uint8 ``frames`` to ``path`` in ``fmt`` with the output ``options``; errors name the file
    as ``name`` (default: the path's)."""
    import imageio_ffmpeg

    _, height, width, _ = frames.shape
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
    if metadata_file:
        cmd += ["-f", "ffmetadata", "-i", metadata_file, "-map_metadata", "1"]
    cmd += ["-map", "0:v", *options, "-f", CONTAINERS[fmt].muxer, str(path)]
    result = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if result.returncode != 0:
        raise OSError(f"ffmpeg could not write {name or Path(path).name}: "
                      f"{result.stderr.decode(errors='replace').strip()}")


def write_videos(videos, paths, fps=DEFAULT.fps, fmt=None, metadata=None, crf=None, codec=None):
    """Encode each [F, H, W, 3] video (0..1 floats or uint8) to its path; the files appear whole and together, or
    none does.

    ``fmt``: one of ``FORMATS`` (default: each path's suffix). ``codec``: one of ``CODECS`` that the format holds
    (``auto`` or None: the format's own, the first of its ``CONTAINERS`` codecs). ``metadata``: container tags (gif
    has none). ``crf``: the quality, lower is better and bigger, in 0 to the codec's ``crf_max`` (None: its ``crf``;
    see ``VIDEO_CODECS``).
    """
    formats = [fmt or Path(path).suffix.lstrip(".") for path in paths]
    for f in formats:
        if f not in CONTAINERS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {f!r}")
    options = [encoder_options(f, codec, crf) for f in formats]
    videos = [video_frames(frames, f) for frames, f in zip(videos, formats)]
    meta_file = None
    try:
        if metadata:
            fd, meta_file = tempfile.mkstemp(suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_ffmetadata(metadata))
        write_files(paths, lambda i, tmp: encode(videos[i], tmp, fps, formats[i], options[i], meta_file,
                                                 Path(paths[i]).name))
    finally:
        if meta_file:
            os.unlink(meta_file)
    return [Path(path) for path in paths]


def write_video(frames, path, fps=DEFAULT.fps, fmt=None, metadata=None, crf=None, codec=None):
    """Encode [F, H, W, 3] frames (0..1 floats or uint8) to ``path``; the file appears whole or not at all (see
    ``write_videos`` for the options)."""
    return write_videos([frames], [path], fps=fps, fmt=fmt, metadata=metadata, crf=crf, codec=codec)[0]
