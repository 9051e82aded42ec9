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
from .validation import require_choices

FORMATS = ["mp4", "webm", "gif", "png", "mkv"]
PREVIEW_FORMATS = ["mp4", "webm", "gif"]
AUTO_CRF = -1


def fps_input():
    return io.Int.Input("fps", default=8, min=1, max=120, tooltip="Frames per second; the model was made for 8.")


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
        if format == "png":
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
                io.Combo.Input("format", options=FORMATS, default="mp4",
                               tooltip="mp4: H.264 yuv420p, plays everywhere. webm: VP9. gif: no metadata. "
                                       "png: one image per frame. mkv: H.264, as core Save Video's mkv."),
                io.Int.Input("crf", default=AUTO_CRF, min=AUTO_CRF, max=max(t2v_core.CRF_MAX.values()),
                             optional=True,
                             tooltip="Quality of mp4, webm and mkv, as core Save Video's crf: 0 is the best and "
                                     "biggest, the codec's highest the smallest (H.264 51, VP9 and AV1 63). -1: the "
                                     "codec's default (H.264 17, VP9 and AV1 30). gif and png ignore it."),
                io.Combo.Input("codec", options=list(t2v_core.CODECS), default="auto", optional=True,
                               tooltip="The video codec, as core Save Video's: auto is the format's own (mp4 and mkv "
                                       "H.264, webm VP9); h264 in mp4 and mkv; vp9 in webm and mkv; av1 (SVT-AV1) in "
                                       "mp4, webm and mkv. gif and png take only auto."),
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
                io.Combo.Input("format", options=PREVIEW_FORMATS, default="mp4",
                               tooltip="mp4: H.264 yuv420p, plays everywhere. webm: VP9. gif: no metadata."),
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
