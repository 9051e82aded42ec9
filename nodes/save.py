"""Save and preview video nodes: mp4 / webm / mkv / gif / PNG frames in the output folder (or ComfyUI's temp folder
for a preview), one file per video of a batch, previewed on the canvas."""
import json
import os
import random
import string

import folder_paths
from comfy_api.latest import io, ui
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .. import t2v_core
from .loader import CATEGORY
from .settings import limits
from .validation import require_choices

PNG = "png"  # one image per frame, written here; the other formats are t2v_core's videos
FORMATS = list(t2v_core.FORMATS)
FORMATS.insert(FORMATS.index("mkv"), PNG)  # the combo's order since mkv came, last
PREVIEW_FORMATS = ["mp4", "webm", "gif"]
AUTO_CRF = -1


def spoken(words):
    """["a", "b", "c"] -> "a, b and c"."""
    words = list(words)
    return f"{', '.join(words[:-1])} and {words[-1]}" if len(words) > 1 else "".join(words)


def grouped(pairs):
    """[(name, value), ...] -> "H.264 51, VP9 and AV1 63": the names of each value together, in order."""
    groups = {}
    for name, value in pairs:
        groups.setdefault(value, []).append(name)
    return ", ".join(f"{spoken(names)} {value}" for value, names in groups.items())


# The tooltips of the format, codec and crf inputs, from t2v_core's table of formats and codecs.
CODED = [fmt for fmt in FORMATS if fmt != PNG and t2v_core.CONTAINERS[fmt].codecs]  # the formats with a codec
UNCODED = spoken(fmt for fmt in FORMATS if fmt not in CODED)


def format_tooltip(formats):
    about = {PNG: "one image per frame", **{fmt: container.about for fmt, container in t2v_core.CONTAINERS.items()}}
    return " ".join(f"{fmt}: {about[fmt]}." for fmt in formats)


def codec_tooltip():
    own = grouped((fmt, t2v_core.VIDEO_CODECS[t2v_core.CONTAINERS[fmt].codecs[0]].label) for fmt in CODED)
    held = "; ".join(f"{name}{f' ({codec.encoder_label})' if codec.encoder_label else ''} in "
                     f"{spoken(fmt for fmt in CODED if name in t2v_core.CONTAINERS[fmt].codecs)}"
                     for name, codec in t2v_core.VIDEO_CODECS.items())
    return f"The video codec, as core Save Video's: auto is the format's own ({own}); {held}. {UNCODED} take only auto."


def crf_tooltip():
    codecs = t2v_core.VIDEO_CODECS.values()
    return (f"Quality of {spoken(CODED)}, as core Save Video's crf: 0 is the best and biggest, the codec's highest the "
            f"smallest ({grouped((c.label, c.crf_max) for c in codecs)}). {AUTO_CRF}: the codec's default "
            f"({grouped((c.label, c.crf) for c in codecs)}). {UNCODED} ignore it.")


def fps_input():
    return io.Int.Input("fps", **limits("fps"), tooltip="Frames per second; the model was made for 8.")


def videos_input(optional=False):
    return io.Int.Input("videos", default=1, min=1, max=4096, optional=optional,
                        tooltip="How many videos of equal length the frames hold (the batch_size of the noise video); "
                                "each is written as its own file, numbered as core Save Image numbers a batch.")


def check_prefix(filename_prefix):
    """Refuse prefixes that would write outside the output folder."""
    if "\0" in filename_prefix:
        raise ValueError(f"filename_prefix: {filename_prefix!r} holds a NUL character (\\x00), which no file name may "
                         f"hold; remove it")
    parts = filename_prefix.replace("\\", "/").split("/")
    if os.path.isabs(filename_prefix) or ".." in parts or not filename_prefix.strip():
        raise ValueError(f"filename_prefix: {filename_prefix!r} must be a name inside the output folder "
                         f"(subfolders allowed, no '..' and no absolute path)")


def require_format_and_codec(format, formats, codec, crf):
    """An error naming the input when format is not one of ``formats``, codec does not fit it, or crf (None: the
    codec's default) is beyond the codec's range."""
    require_choices(format=(format, formats), codec=(codec, t2v_core.CODECS))
    error = t2v_core.codec_error(format, codec, crf)
    if error:
        raise ValueError(error)


def split_videos(images, videos):
    """IMAGE [N, H, W, C] holding ``videos`` videos of equal length -> uint8 [videos, N / videos, H, W, 3]."""
    if len(images) % videos:
        raise ValueError(f"videos: {len(images)} frames do not split into {videos} videos of equal length; give the "
                         f"batch_size of the noise video, a divisor of {len(images)}")
    frames = t2v_core.to_uint8(images[..., :3])
    return frames.reshape(videos, len(frames) // videos, *frames.shape[1:])


def metadata_of(hidden):
    """The prompt and workflow, as core's save nodes embed them."""
    metadata = {} if hidden.prompt is None else {"prompt": json.dumps(hidden.prompt)}
    for key, value in (hidden.extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata


def save_png_frames(videos, folder, stems, metadata):
    """One PNG per frame, ``<stem><frame>.png`` for each video's stem, with prompt/workflow in text chunks. Written
    by ``t2v_core.write_files``: a failure leaves no frames behind."""
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)
    frames = [frame for video in videos for frame in video]
    names = [f"{stem}{i + 1:05}.png" for stem, video in zip(stems, videos) for i in range(len(video))]
    t2v_core.write_files([os.path.join(folder, name) for name in names], lambda i, tmp: Image.fromarray(frames[i]).save(
        tmp, format="PNG", pnginfo=info, compress_level=4))
    return names


def save(videos, fps, filename_prefix, format, crf, codec, metadata, folder_type):
    """Write each of ``videos`` as its own file (a set of PNG frames for png) into the output or temp folder; the
    node's UI output. ``crf`` None: the codec's default. Nothing is left behind when any file fails."""
    base = folder_paths.get_temp_directory() if folder_type == io.FolderType.temp else folder_paths.get_output_directory()
    height, width = videos.shape[2:4]
    try:
        folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, base, width, height)
        os.makedirs(folder, exist_ok=True)
        names = [f"{stem.replace('%batch_num%', str(i))}_{counter + i:05}_" for i in range(len(videos))]
        if format == PNG:
            files = save_png_frames(videos, folder, names, metadata)
            return ui.SavedImages([ui.SavedResult(f, subfolder, folder_type) for f in files])
        files = [f"{name}.{format}" for name in names]
        t2v_core.write_videos(videos, [os.path.join(folder, f) for f in files], fps=fps, fmt=format, metadata=metadata,
                              crf=crf, codec=codec)
        return ui.PreviewVideo([ui.SavedResult(f, subfolder, folder_type) for f in files])
    except OSError as e:
        where = os.path.join(base, os.path.dirname(filename_prefix))
        raise OSError(f"filename_prefix: could not write the {format} into {where} ({e.strerror or e}); "
                      f"nothing was saved. Check that the output folder is writable and has free space.") from e


class SaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VSaveVideo",
            display_name="ModelScope Text-to-Video Save Video",
            category=CATEGORY,
            description="Writes the frames as a video in the output folder and previews it on the node.",
            inputs=[
                io.Image.Input("images", tooltip="The frames, in order (from ModelScope T2V VAE Decode)."),
                fps_input(),
                io.String.Input("filename_prefix", default="ModelScopeT2V/video",
                                tooltip="File name start inside the output folder; may contain subfolders and "
                                        "%date% style variables. A counter is appended."),
                io.Combo.Input("format", options=FORMATS, default=FORMATS[0], tooltip=format_tooltip(FORMATS)),
                io.Int.Input("crf", default=AUTO_CRF, min=AUTO_CRF,
                             max=max(codec.crf_max for codec in t2v_core.VIDEO_CODECS.values()), optional=True,
                             tooltip=crf_tooltip()),
                io.Combo.Input("codec", options=list(t2v_core.CODECS), default="auto", optional=True,
                               tooltip=codec_tooltip()),
                videos_input(optional=True),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix):
        try:
            check_prefix(filename_prefix)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, images, fps, filename_prefix, format, crf=AUTO_CRF, codec="auto", videos=1) -> io.NodeOutput:
        check_prefix(filename_prefix)
        crf = None if crf == AUTO_CRF else crf
        require_format_and_codec(format, FORMATS, codec, crf)
        return io.NodeOutput(ui=save(split_videos(images, videos), fps, filename_prefix, format, crf, codec,
                                     metadata_of(cls.hidden), io.FolderType.output))


class PreviewVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ModelScopeT2VPreviewVideo",
            display_name="ModelScope Text-to-Video Preview Video",
            category=CATEGORY,
            description="Shows the frames as a video on the node without saving them: the file goes to ComfyUI's "
                        "temp folder, as core Preview Image's do.",
            inputs=[
                io.Image.Input("images", tooltip="The frames, in order (from ModelScope T2V VAE Decode)."),
                fps_input(),
                io.Combo.Input("format", options=PREVIEW_FORMATS, default=PREVIEW_FORMATS[0],
                               tooltip=format_tooltip(PREVIEW_FORMATS)),
                videos_input(),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, fps, format, videos) -> io.NodeOutput:
        require_choices(format=(format, PREVIEW_FORMATS))
        prefix = "ModelScopeT2V_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
        return io.NodeOutput(ui=save(split_videos(images, videos), fps, prefix, format, None, "auto",
                                     metadata_of(cls.hidden), io.FolderType.temp))
