"""The local embedder's files are held to pinned digests; a damaged quantized copy is built again."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agentheal.embedding import MODEL_FILE, TOKENIZER_FILE, LocalEmbedder, ModelDigestError, PinnedFile

TEXTS = ["disk full on /var/log", "nginx returns 502 after a deploy", "postgres refuses connections"]


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _quantized_files(cache: Path) -> tuple[Path, Path]:
    [model] = cache.glob("*.onnx")
    return model, model.with_name(model.name + ".sha256")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, npt.NDArray[np.float32]]]:
    """A cache folder holding a freshly quantized model, and that model's vectors for TEXTS."""
    folder = tmp_path_factory.mktemp("built-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENTHEAL_MODEL_CACHE", str(folder))
        vectors = LocalEmbedder().embed(TEXTS)
    yield folder, vectors


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "model-cache"
    monkeypatch.setenv("AGENTHEAL_MODEL_CACHE", str(folder))
    return folder


@pytest.mark.parametrize(
    ("argument", "pinned"), [("model_file", MODEL_FILE), ("tokenizer_file", TOKENIZER_FILE)]
)
def test_a_model_file_with_one_byte_changed_is_refused(
    tmp_path: Path, cache: Path, argument: str, pinned: PinnedFile
) -> None:
    copy = tmp_path / Path(pinned.path).name
    shutil.copyfile(pinned.locate(), copy)
    _flip(copy, copy.stat().st_size // 2)

    with pytest.raises(ModelDigestError) as caught:
        LocalEmbedder(**{argument: copy}).embed(TEXTS)  # type: ignore[arg-type]

    actual = _sha256(copy)
    assert actual != pinned.sha256
    assert (caught.value.path, caught.value.expected, caught.value.actual) == (copy, pinned.sha256, actual)
    message = str(caught.value)
    for part in (str(copy), pinned.sha256, actual, pinned.distribution, "AGENTHEAL_EMBED_BASE_URL"):
        assert part in message
    assert not list(cache.glob("*.onnx")), "nothing may be quantized from a refused model"


@pytest.mark.slow
def test_a_file_changed_after_it_was_verified_is_refused(
    tmp_path: Path, cache: Path, built: tuple[Path, npt.NDArray[np.float32]]
) -> None:
    shutil.copytree(built[0], cache)
    copy = tmp_path / "model.onnx"
    shutil.copyfile(MODEL_FILE.locate(), copy)
    # Only a file whose timestamps have settled is remembered as verified: wait for that, so
    # the second load meets a remembered digest for this path.
    while time.time_ns() - copy.stat().st_ctime_ns <= 2_100_000_000:
        time.sleep(0.1)
    LocalEmbedder(model_file=copy).embed(TEXTS[:1])
    remembered = json.loads((cache / "verified-sha256.json").read_text())
    assert remembered[str(copy.resolve())]["sha256"] == MODEL_FILE.sha256

    _flip(copy, 12345)
    with pytest.raises(ModelDigestError, match=_sha256(copy)):
        LocalEmbedder(model_file=copy).embed(TEXTS[:1])


def test_an_intact_quantized_copy_is_used_as_it_is(
    cache: Path, built: tuple[Path, npt.NDArray[np.float32]]
) -> None:
    shutil.copytree(built[0], cache)
    model, _ = _quantized_files(cache)
    before = model.stat()

    vectors = LocalEmbedder().embed(TEXTS)

    assert model.stat().st_ino == before.st_ino and model.stat().st_mtime_ns == before.st_mtime_ns
    np.testing.assert_allclose(vectors, built[1], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip a byte of the model", "sidecar names another digest", "no sidecar"])
def test_a_damaged_quantized_copy_is_built_again(
    cache: Path, built: tuple[Path, npt.NDArray[np.float32]], damage: str
) -> None:
    shutil.copytree(built[0], cache)
    model, sidecar = _quantized_files(cache)
    if damage == "flip a byte of the model":
        _flip(model, model.stat().st_size // 2)
    elif damage == "sidecar names another digest":
        sidecar.write_text(f"{'0' * 64}  {model.name}\n")
    else:
        sidecar.unlink()
    damaged_inode, damaged_digest = model.stat().st_ino, _sha256(model)

    vectors = LocalEmbedder().embed(TEXTS)

    assert model.stat().st_ino != damaged_inode, "the cached model was not written again"
    assert sidecar.read_text().split()[0] == _sha256(model)
    if damage == "flip a byte of the model":
        assert _sha256(model) != damaged_digest
    cosines = np.sum(vectors * built[1], axis=1)
    assert cosines.min() > 0.999
