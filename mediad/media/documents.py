"""Documents: a PDF is kept on its magic bytes, once its last bytes prove it was not cut short."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mediad import errors
from mediad.media.info import MediaInfo

PDF = "application/pdf"
_PDF_VERSION = re.compile(rb"%PDF-(\d\.\d)")


def probe_pdf(path: Path, head: bytes) -> MediaInfo:
    """PDF is accepted on its magic; a missing %%EOF near the end means it was cut short."""
    with path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - 1024))
        tail = file.read()
    if b"%%EOF" not in tail:
        raise errors.CorruptMediaError("PDF document is truncated: no %%EOF marker at its end")
    metadata: dict[str, Any] = {"format": "PDF"}
    version = _PDF_VERSION.match(head)
    if version is not None:
        metadata["pdf_version"] = version[1].decode()
    return MediaInfo(PDF, "pdf", "document", metadata=metadata)
