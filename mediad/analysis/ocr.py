"""Text in pictures: RapidOCR (PP-OCR models bundled in its wheel, run by onnxruntime), one
engine per process, and a guess of the text's language (language.py).

Nothing is fetched at run time: the engine is given the bundled model files by path, so
RapidOCR's own resolver (which downloads whatever its config names and is not on disk) never
runs. The engine runs single-threaded: the parallelism is the pool's, one task per core.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os
import sys
import threading
from pathlib import Path
from typing import Any

from mediad import errors
from mediad.analysis import language
from mediad.media import decoder_worker

# The models the rapidocr wheel ships (3.10: PP-OCRv6 small detection and recognition, the
# PP-OCR mobile direction classifier). Named, not globbed: the model string says what ran.
DET_MODEL = "PP-OCRv6_det_small.onnx"
CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
# Lines read with less confidence are dropped (RapidOCR's own default).
MIN_CONFIDENCE = 0.5
# Longer than any picture handed in (frames.py bounds them): detection never resizes.
_DET_LIMIT = 8192
# glibc's mallopt(M_ARENA_MAX): see _single_threaded.
_M_ARENA_MAX = -8

_lock = threading.Lock()
_engines: dict[int, Any] = {}


def model_name() -> str:
    """What reads the text, by version and model files: part of the analysis cache key."""
    models = "+".join(Path(name).stem for name in (DET_MODEL, CLS_MODEL, REC_MODEL))
    return f"rapidocr-{_version('rapidocr')}/{models}"


def read(picture: Any, *, scale: float = 1.0, threads: int = 1) -> dict[str, Any]:
    """The text lines of an RGB picture, top to bottom: text, confidence, and box (four
    corners in the original picture's pixels: the analysed one's divided by `scale`)."""
    engine = _engine(threads)  # first: it sets the thread counts numpy reads as it loads
    import numpy as np

    # RapidOCR takes arrays as OpenCV does, BGR.
    bgr = np.ascontiguousarray(np.asarray(picture.convert("RGB"))[:, :, ::-1])
    result = engine(bgr, text_score=MIN_CONFIDENCE)
    lines: list[dict[str, Any]] = []
    boxes = result.boxes if result.boxes is not None else []
    for box, text, score in zip(boxes, result.txts or (), result.scores or (), strict=False):
        text = str(text).strip()
        if not text or float(score) < MIN_CONFIDENCE:
            continue
        corners = [[round(float(x) / scale), round(float(y) / scale)] for x, y in box]
        lines.append({"text": text, "confidence": round(float(score), 3), "box": corners})
    text = "\n".join(line["text"] for line in lines)
    return {"text": text, "lines": lines, "language": guess_language(text)}


def guess_language(text: str) -> dict[str, Any] | None:
    """The ISO 639-1 code of the text's language and a confidence (0-1), or None."""
    return language.guess(text)


def _engine(threads: int) -> Any:
    with _lock:
        engine = _engines.get(threads)
        if engine is None:
            engine = _engines[threads] = _new_engine(threads)
        return engine


def _new_engine(threads: int) -> Any:
    _single_threaded(threads)
    try:
        import rapidocr
        from rapidocr import RapidOCR
    except ImportError as exc:
        raise _missing(exc) from None
    models = Path(rapidocr.__file__).parent / "models"
    paths = {name: models / name for name in (DET_MODEL, CLS_MODEL, REC_MODEL)}
    absent = [name for name, path in paths.items() if not path.is_file()]
    if absent:
        raise errors.ConfigError(
            f"analysis.backend = local: the installed rapidocr {_version('rapidocr')} does not "
            f"ship {', '.join(absent)}, and nothing is downloaded at run time"
        )
    _options_for_varying_shapes()
    return RapidOCR(
        params={
            "Global.log_level": "error",
            "Det.model_path": str(paths[DET_MODEL]),
            "Cls.model_path": str(paths[CLS_MODEL]),
            "Rec.model_path": str(paths[REC_MODEL]),
            # The picture is already no larger than wanted: detect at its own size. RapidOCR's
            # default upscales every picture to 736 pixels on its short side, which costs a
            # 480x320 picture 3x the CPU and reads no more of it (9-14 px text: all of it).
            "Det.limit_type": "max",
            "Det.limit_side_len": _DET_LIMIT,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )


def _options_for_varying_shapes() -> None:
    """Every onnxruntime session RapidOCR makes, without memory patterns.

    A memory pattern is planned and kept for each input shape, and every picture has its own
    shape: with them, a worker's address space grew by 150 MB over 40 pictures (past 1 GiB);
    without, it stays flat, for the same CPU. RapidOCR has no setting for it: its options
    factory is wrapped (tests check the sessions' options, so an upgrade that moves it shows).
    """
    from rapidocr.inference_engine.onnxruntime import main as ort_main

    factory: Any = ort_main.OrtInferSession._init_sess_opts
    if getattr(factory, "mediad_wrapped", False):
        return

    def without_memory_pattern(cfg: Any) -> Any:
        options = factory(cfg)
        options.enable_mem_pattern = False
        return options

    without_memory_pattern.mediad_wrapped = True  # type: ignore[attr-defined]
    ort_main.OrtInferSession._init_sess_opts = staticmethod(without_memory_pattern)  # type: ignore[method-assign]


def _single_threaded(threads: int) -> None:
    """Keep the engine's libraries to `threads` threads, and its address space small.

    A decoder worker runs under an address-space limit: each idle OpenBLAS or OpenMP thread
    reserves its buffers, and each thread that allocates gets a glibc malloc arena of 64 MiB
    of address space (one arena: the work is single-threaded). Capped, one OCR of a 1280-pixel
    picture peaked near 800 MiB of address space instead of 1.1 GiB. The environment only
    counts before numpy and OpenCV load.
    """
    if "numpy" not in sys.modules:
        for name in decoder_worker.THREAD_COUNTS:
            os.environ.setdefault(name, str(threads))
    libc_name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "mallopt"):
            libc.mallopt(_M_ARENA_MAX, 1)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError as exc:
        raise _missing(exc) from None


def _missing(exc: ImportError) -> errors.ConfigError:
    return errors.ConfigError(
        f"analysis.backend = local needs the optional packages of mediad[local-analysis]"
        f" (pip install 'mediad[local-analysis]'): {exc}"
    )


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
