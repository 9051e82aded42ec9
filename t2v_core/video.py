"""Writing frames to video files with the ffmpeg that ships inside ``imageio-ffmpeg``."""
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .files import write_files

ENCODERS = {
    # yuv420p throughout: browsers, QuickTime and VLC play it. The crf defaults are the pack's of before for H.264
    # and VP9, and core Save Video's for AV1 (SVT-AV1 at core Save WEBM's preset).
    "h264": ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "17"],
    "vp9": ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "30", "-b:v", "0", "-row-mt", "1"],
    "av1": ["-c:v", "libsvtav1", "-pix_fmt", "yuv420p", "-crf", "30", "-preset", "6"],
}
CONTAINERS = {
    # format: (ffmpeg's muxer, the codecs it holds with its default first, the muxer's options)
    "mp4": ("mp4", ("h264", "av1"), ["-movflags", "+faststart+use_metadata_tags"]),  # the index up front
    "webm": ("webm", ("vp9", "av1"), []),
    "mkv": ("matroska", ("h264", "vp9", "av1"), []),
    "gif": ("gif", (), ["-vf", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-loop", "0"]),
}
FORMATS = tuple(CONTAINERS)
CODECS = ("auto", *ENCODERS)
CRF_MAX = {"h264": 51, "vp9": 63, "av1": 63}  # each encoder's range is 0 to this, as in core Save Video


def encoder_of(fmt, codec=None):
    """The codec ``fmt`` is written with (``auto`` or None: the format's own), or None for a format without one."""
    held = CONTAINERS[fmt][1] if fmt in CONTAINERS else ()
    return held[0] if held and codec in (None, "auto") else codec if codec in held else None


def codec_error(fmt, codec, crf=None):
    """None, or a message naming ``codec`` when ``fmt`` cannot hold it (``auto``: the format's default), or ``crf``
    when it is beyond that codec's range (formats without a codec ignore it)."""
    held = CONTAINERS[fmt][1] if fmt in CONTAINERS else ()
    if codec not in (None, "auto", *held):
        expected = ", ".join(("auto", *held)) if held else f"auto (a {fmt} has no codec to choose)"
        return f"codec: {codec!r} does not fit the {fmt} format; expected {expected}"
    encoder = encoder_of(fmt, codec)
    if encoder and crf is not None and not 0 <= crf <= CRF_MAX[encoder]:
        return (f"crf: {crf} is beyond {encoder}'s range 0-{CRF_MAX[encoder]} (the {fmt} format with codec "
                f"{codec or 'auto'}); give a crf in that range or a codec that takes {crf}")
    return None


def encoder_options(fmt, codec=None, crf=None):
    """ffmpeg's output options for ``codec`` in ``fmt``; ``crf`` replaces the codec's default (None: kept)."""
    error = codec_error(fmt, codec, crf)
    if error:
        raise ValueError(error)
    encoder = encoder_of(fmt, codec)
    if encoder is None:
        return CONTAINERS[fmt][2]
    options = list(ENCODERS[encoder])
    if crf is not None:
        options[options.index("-crf") + 1] = str(crf)
    return [*options, *CONTAINERS[fmt][2]]


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
    cmd += ["-map", "0:v", *options, "-f", CONTAINERS[fmt][0], str(path)]
    result = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if result.returncode != 0:
        raise OSError(f"ffmpeg could not write {name or Path(path).name}: "
                      f"{result.stderr.decode(errors='replace').strip()}")


def write_videos(videos, paths, fps=8, fmt=None, metadata=None, crf=None, codec=None):
    """Encode each [F, H, W, 3] video (0..1 floats or uint8) to its path; the files appear whole and together, or
    none does.

    ``fmt``: one of ``FORMATS`` (default: each path's suffix). ``codec``: one of ``CODECS`` that the format holds
    (``auto`` or None: H.264 in mp4 and mkv, VP9 in webm). ``metadata``: container tags (gif has none). ``crf``: the
    quality, lower is better and bigger (H.264 0-51, VP9 and AV1 0-63; default 17 for H.264, 30 for the others).
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


def write_video(frames, path, fps=8, fmt=None, metadata=None, crf=None, codec=None):
    """Encode [F, H, W, 3] frames (0..1 floats or uint8) to ``path``; the file appears whole or not at all (see
    ``write_videos`` for the options)."""
    return write_videos([frames], [path], fps=fps, fmt=fmt, metadata=metadata, crf=crf, codec=codec)[0]
