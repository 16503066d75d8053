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
from typing import Any, Callable

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


# -- tiling: every token embedded once ----------------------------------------------------------
#
# A document is tiled with embedding windows that follow its structure (blocks whole where they
# fit, a window never mid-sentence unless one sentence alone is longer than a window), and chunks
# are runs of consecutive windows: a chunk's vector rows are exactly the windows it covers, so
# each token is read by the model once (plus the small overlap where a sentence had to be cut),
# instead of once per overlapping chunk and again per overlapping window inside it.


@dataclass
class TiledChunk(TextChunk):
    # The chunk's embedding windows, in order, covering it whole, and where each lies in the
    # document's text (character offsets [start, end)).
    windows: list[str] = field(default_factory=list)
    window_offsets: list[tuple[int, int]] = field(default_factory=list)


def tile_document(
    text: str,
    document_id: str,
    chunk_size: int,
    tokenizer: Tokenizer,
    window_limit: Callable[[str], int],
    metadata: dict[str, Any] | None = None,
    markup: str | None = None,
) -> list[TiledChunk]:
    """Chunks of at most `chunk_size` tokens made of whole windows of at most
    `window_limit(section)` tokens each (the embedding model's input, less the section prefix).

    Windows pack whole blocks (paragraphs, lists, code, headings: content/sections.py) and start
    afresh at a heading once the current one is a quarter full; a block longer than a window is cut
    at sentence ends, then line ends, and only a sentence longer than a window is cut mid-way, with
    WINDOW_OVERLAP_TOKENS of overlap. Chunks group consecutive windows the same way.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    spans = token_spans(tokenizer, text)
    if not spans:
        return []
    found = blocks(text, markup) or [Block(0, len(text), "")]
    starts = [s for s, _ in spans]
    # Units: (first token, last token, section, opens a section), never longer than a window.
    units: list[tuple[int, int, str, bool]] = []
    covered = 0
    for block in found:
        first = max(bisect.bisect_left(starts, block.start), covered)
        last = bisect.bisect_left(starts, block.end)
        if last <= first:
            continue
        if first > covered:  # text between blocks (rare: blocks skip blank lines only)
            units.append((covered, first, block.section, False))
        limit = min(window_limit(block.section), chunk_size)
        for a, b in _cut(text, spans, first, last, limit):
            units.append((a, b, block.section, block.heading and a == first))
        covered = last
    if covered < len(spans):
        units.append((covered, len(spans), found[-1].section, False))
    windows = _pack(units, lambda section: min(window_limit(section), chunk_size))
    doc_metadata = dict(metadata or {})
    metadata_tokens = tokenizer.count(str(doc_metadata)) if doc_metadata else 0
    chunks: list[TiledChunk] = []
    for index, group in enumerate(_group(windows, chunk_size)):
        first, last = group[0][0], max(w[1] for w in group)
        content = text[spans[first][0] : spans[last - 1][1]]
        chunk_metadata = {**doc_metadata, "document_id": document_id, "token_count": last - first,
                          "metadata_token_count": metadata_tokens}
        chunks.append(TiledChunk(chunk_id_for(document_id, index, content), document_id, content, chunk_metadata,
                                 index, group[0][2],
                                 windows=[text[spans[a][0] : spans[b - 1][1]] for a, b, _, _ in group],
                                 window_offsets=[(spans[a][0], spans[b - 1][1]) for a, b, _, _ in group]))
    return chunks


def _cut(text: str, spans: list[tuple[int, int]], first: int, last: int, limit: int) -> list[tuple[int, int]]:
    """[first, last) as pieces of at most `limit` tokens, cut where a sentence (else a line) ends."""
    if last - first <= limit:
        return [(first, last)]
    sentence_ends: list[int] = []  # token indices before which a cut is clean
    line_ends: list[int] = []
    for i in range(first, last - 1):
        gap = text[spans[i][1] : spans[i + 1][0]]
        if "\n\n" in gap or (gap and not gap.strip() and text[spans[i][1] - 1] in ".!?"):
            sentence_ends.append(i + 1)
        elif "\n" in gap:
            line_ends.append(i + 1)
    pieces = []
    start = first
    while last - start > limit:
        end = start + limit
        cut = _last_at_most(sentence_ends, start + limit // 3, end) or _last_at_most(line_ends, start + limit // 3, end)
        if cut:
            pieces.append((start, cut))
            start = cut
        else:
            # One sentence longer than a window: cut it, and let the next window re-read a little.
            overlap = min(WINDOW_OVERLAP_TOKENS, limit // 4)
            pieces.append((start, end))
            start = end - overlap
    pieces.append((start, last))
    return pieces


def _last_at_most(cuts: list[int], low: int, high: int) -> int | None:
    i = bisect.bisect_right(cuts, high) - 1
    return cuts[i] if i >= 0 and cuts[i] > low else None


def _pack(units: list[tuple[int, int, str, bool]], limit: Callable[[str], int]) -> list[tuple[int, int, str, bool]]:
    """Consecutive units joined into windows of at most limit(section of the window's start)."""
    windows: list[tuple[int, int, str, bool]] = []
    current: list[Any] | None = None
    for first, last, section, heading in units:
        if current is not None:
            size = current[1] - current[0]
            cap = limit(current[2])
            overlapping = first < current[1]
            if overlapping or (heading and size >= cap // 4) or max(last, current[1]) - current[0] > cap:
                windows.append(tuple(current))
                current = None
        if current is None:
            current = [first, last, section, heading]
        else:
            current[1] = max(current[1], last)
    if current is not None:
        windows.append(tuple(current))
    return windows


def _group(windows: list[tuple[int, int, str, bool]], chunk_size: int) -> list[list[tuple[int, int, str, bool]]]:
    """Consecutive windows joined into chunks of at most chunk_size tokens."""
    groups: list[list[tuple[int, int, str, bool]]] = []
    for window in windows:
        if groups:
            group = groups[-1]
            size = group[-1][1] - group[0][0]
            grown = window[1] - group[0][0]
            if not ((window[3] and size >= chunk_size // 4) or grown > chunk_size):
                group.append(window)
                continue
        groups.append([window])
    return groups
