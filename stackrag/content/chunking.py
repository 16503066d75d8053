"""Splitting text into chunks (what a query returns) and embedding windows (what gets embedded).

Tokens are the embedding model's own WordPiece tokens (see providers/inference), so a chunk's
`token_count` is what the model would read. A chunk may be longer than the model can read
(MiniLM: 254 tokens plus two specials); it is then embedded as several windows that together
cover every token, so no text of it goes unembedded.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from ..providers.protocols import Tokenizer
from .sections import Block, blocks, section_at

# Overlap between neighbouring embedding windows, so a sentence cut at a window edge is still
# seen whole by one of them.
WINDOW_OVERLAP_TOKENS = 32


@dataclass
class TextChunk:
    chunk_id: str
    document_id: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # Position in its document (0 = the opening chunk); -1 when unknown.
    index: int = -1
    # The heading path the chunk starts under ("" when the text has none).
    section: str = ""


def chunk_id_for(document_id: str, index: int, content: str) -> str:
    return hashlib.sha256(f"{document_id}\x00{index}\x00{content}".encode()).hexdigest()[:32]


def token_spans(tokenizer: Tokenizer, text: str) -> list[tuple[int, int]]:
    return [span for span in tokenizer.offsets(text) if span[1] > span[0]]


def split_document(
    text: str,
    document_id: str,
    chunk_size: int,
    tokenizer: Tokenizer,
    metadata: dict[str, Any] | None = None,
    overlap: int | None = None,
    markup: str | None = None,
    structured: bool = False,
) -> list[TextChunk]:
    """Chunks of at most `chunk_size` tokens.

    By default, overlapping token windows (the overlap defaults to a quarter, as in Llama Stack).
    With `structured` and a known `markup` (markdown, rst), chunks follow the document's structure:
    whole blocks packed up to `chunk_size`, a new chunk at each section that starts once the
    current one is a quarter full, code blocks never cut unless one alone exceeds a chunk.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    overlap = chunk_size // 4 if overlap is None else overlap
    if not 0 <= overlap < chunk_size:
        raise ValueError("overlap must be smaller than chunk_size")
    spans = token_spans(tokenizer, text)
    found = blocks(text, markup) if markup else []
    if structured and markup:
        ranges = _structured_ranges(found, spans, chunk_size, overlap) or _window_ranges(len(spans), chunk_size, overlap)
    else:
        ranges = _window_ranges(len(spans), chunk_size, overlap)
    doc_metadata = dict(metadata or {})
    metadata_tokens = tokenizer.count(str(doc_metadata)) if doc_metadata else 0
    chunks: list[TextChunk] = []
    for index, (first, last) in enumerate(ranges):
        # Slicing the original text (rather than decoding tokens) keeps case, spacing and markup.
        content = text[spans[first][0] : spans[last - 1][1]]
        chunk_metadata = {
            **doc_metadata,
            "document_id": document_id,
            "token_count": last - first,
            "metadata_token_count": metadata_tokens,
        }
        chunks.append(TextChunk(chunk_id_for(document_id, index, content), document_id, content, chunk_metadata,
                                index, section_at(found, spans[first][0])))
    return chunks


def _window_ranges(total: int, chunk_size: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges [first, last) of overlapping fixed-size windows."""
    step = chunk_size - overlap
    return [(start, min(start + chunk_size, total)) for start in range(0, max(total - overlap, 1), step)
            if start < total]


def _structured_ranges(found: list[Block], spans: list[tuple[int, int]], chunk_size: int,
                       overlap: int) -> list[tuple[int, int]]:
    starts = [s for s, _ in spans]
    ranges: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for block in found:
        first = bisect.bisect_left(starts, block.start)
        last = bisect.bisect_left(starts, block.end)
        if last <= first:
            continue
        if current is not None:
            size = current[1] - current[0]
            # A heading opens a new chunk unless the current one is still small (a title, an intro).
            if (block.heading and size >= chunk_size // 4) or size + (last - first) > chunk_size:
                ranges.append(current)
                current = None
        if last - first > chunk_size:
            # One block larger than a chunk (a long listing): windows over it alone.
            ranges += [(first + a, first + b) for a, b in _window_ranges(last - first, chunk_size, overlap)]
            continue
        current = (first, last) if current is None else (current[0], last)
    if current is not None:
        ranges.append(current)
    return ranges


def embedding_windows(text: str, tokenizer: Tokenizer, max_tokens: int) -> list[str]:
    """Evenly spaced windows of at most `max_tokens` tokens that together cover all of `text`."""
    spans = token_spans(tokenizer, text)
    if len(spans) <= max_tokens:
        return [text]
    overlap = min(WINDOW_OVERLAP_TOKENS, max_tokens // 4)
    count = math.ceil((len(spans) - overlap) / (max_tokens - overlap))
    stride = (len(spans) - max_tokens) / (count - 1)
    windows = []
    for i in range(count):
        start = round(i * stride)
        window = spans[start : start + max_tokens]
        windows.append(text[window[0][0] : window[-1][1]])
    return windows


def embed_whole(embedder: Any, texts: list[str]) -> Any:
    """One vector per text that reads all of it: windows embedded, averaged, re-normalised."""
    import numpy as np

    windows = [embedding_windows(t, embedder.tokenizer, embedder.max_tokens) for t in texts]
    flat = embedder.embed([w for ws in windows for w in ws])
    out = np.empty((len(texts), flat.shape[1] if len(flat) else embedder.dimension), dtype=np.float32)
    offset = 0
    for i, ws in enumerate(windows):
        mean = flat[offset : offset + len(ws)].mean(axis=0)
        out[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        offset += len(ws)
    return out
