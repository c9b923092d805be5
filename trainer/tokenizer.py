"""SAM 3's text tokenizer, built offline.

SAM 3's text encoder is CLIP's, and so is its tokenizer: byte-level BPE with CLIP's 48894 merges. Base models
from the hub carry their tokenizer files; a model made here (a random init for pretraining, the tests' tiny
models) has none, so samtune ships the merges (`clip_merges.txt.gz`, about 200 KB, taken from the bundled
model's tokenizer.json) and derives the rest. The files written here (vocab.json, merges.txt, ...) are the
ones transformers' `CLIPTokenizer` reads, and give the same ids as open_clip's `SimpleTokenizer` (49408
tokens; `<|startoftext|>` = 49406, `<|endoftext|>` = 49407): tests/trainer/test_tokenizer.py checks them
against ids recorded from open_clip.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 49408
BOS_TOKEN_ID = VOCAB_SIZE - 2  # 49406
EOS_TOKEN_ID = VOCAB_SIZE - 1  # 49407
PAD_TOKEN_ID = EOS_TOKEN_ID  # CLIP (and SAM 3's processor) pad with <|endoftext|>
MAX_LENGTH = 32  # Sam3Processor tokenizes with padding="max_length", max_length=32
NUM_MERGES = 49152 - 256 - 2  # 48894, as open_clip's SimpleTokenizer selects them
MERGES_FILE = Path(__file__).with_name("clip_merges.txt.gz")

CACHE_ENV = "SAMTUNE_TOKENIZER_CACHE"
# Bump when the files written by build_clip_tokenizer_files change, so stale caches are not reused.
_FORMAT_VERSION = "2"
_STAMP = "samtune_tokenizer.json"
_REQUIRED = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", _STAMP)

_lock = threading.Lock()


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    # Insertion order matters (it is the vocabulary order): the printable bytes first, then the others by value.
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _read_merges() -> list[tuple[str, str]]:
    with gzip.open(MERGES_FILE, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    selected = lines[1 : NUM_MERGES + 1]  # line 0 is the "#version" header
    pairs = [line.split() for line in selected]
    if len(pairs) != NUM_MERGES or any(len(p) != 2 for p in pairs):
        raise ValueError(f"unexpected content in {MERGES_FILE}")
    return [(first, second) for first, second in pairs]


def _build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    byte_tokens = list(_byte_to_unicode().values())
    tokens = (
        byte_tokens
        + [t + "</w>" for t in byte_tokens]
        + ["".join(m) for m in merges]
        + [BOS_TOKEN, EOS_TOKEN]
    )
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"CLIP vocabulary has {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab


def build_clip_tokenizer_files(out_dir: Path) -> Path:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json (the files
    transformers' CLIPTokenizer reads) derived from the shipped CLIP merges into `out_dir`; returns it.

    Vocabulary order (ids): the 256 byte tokens, their '</w>' variants, one token per merge (the 48894
    merges on lines 1..48894 after the header), then '<|startoftext|>' and '<|endoftext|>' — 49408 tokens.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merges = _read_merges()
    vocab = _build_vocab(merges)

    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with (out_dir / "merges.txt").open("w", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n")
        fh.writelines(f"{a} {b}\n" for a, b in merges)

    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        "errors": "replace",
        **special,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    stamp = {
        "format": _FORMAT_VERSION,
        "source": MERGES_FILE.name,
        "vocab_size": VOCAB_SIZE,
    }
    (out_dir / _STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return out_dir


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "samtune" / "clip-bpe"


def _cache_is_complete(path: Path) -> bool:
    if not all((path / name).is_file() for name in _REQUIRED):
        return False
    try:
        stamp = json.loads((path / _STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp.get("format") == _FORMAT_VERSION


def ensure_tokenizer_files(cache_dir: Path | None = None) -> Path:
    """The directory holding the tokenizer files, building it first if needed.

    Safe across threads and processes: the files are built in a fresh temporary directory next to the
    target, which is renamed into place in one atomic step. If the target already exists but is incomplete
    (another process mid-way, or an older layout) each file is moved in with an atomic `os.replace`, the
    stamp file last, so a reader that sees the stamp sees every file; nothing in the target is deleted.
    """
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if _cache_is_complete(target):
        return target
    with _lock:
        if _cache_is_complete(target):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            build_clip_tokenizer_files(tmp)
            try:
                os.rename(tmp, target)  # fails if target exists and is not empty
            except OSError:
                if not _cache_is_complete(target):
                    target.mkdir(parents=True, exist_ok=True)
                    for name in sorted(_REQUIRED, key=lambda n: n == _STAMP):
                        os.replace(tmp / name, target / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not _cache_is_complete(target):
        raise RuntimeError(f"could not write the CLIP tokenizer files to {target}")
    return target


@lru_cache(maxsize=8)
def _load_cached(path: str) -> PreTrainedTokenizerBase:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(path, local_files_only=True)


def load_tokenizer(cache_dir: Path | None = None) -> PreTrainedTokenizerBase:
    """transformers' CLIP tokenizer built from the shipped CLIP merges, fully offline.

    The files are built once and cached in `cache_dir`, else $SAMTUNE_TOKENIZER_CACHE, else
    ~/.cache/samtune/clip-bpe. The returned object is shared between calls with the same directory.
    """
    path = ensure_tokenizer_files(cache_dir)
    return _load_cached(str(path.resolve()))


def clean_text(text: str) -> str:
    """CLIP's text clean-up before BPE (open_clip's 'lower' clean): fix mojibake with ftfy when it is
    installed, unescape HTML entities twice, collapse whitespace. Lower-casing is left to the tokenizer."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # pragma: no cover - ftfy is a dependency; a bare library install may lack it
        pass
    text = html.unescape(html.unescape(text))
    return " ".join(text.split())


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int = MAX_LENGTH
) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` ([len(texts), max_length], int64) for SAM 3's text encoder.

    Like Sam3Processor (padding="max_length", max_length=32, pad = <|endoftext|>), plus two things the
    processor leaves out: CLIP's text clean-up (see `clean_text`; the tokenizer lower-cases) and truncation,
    which keeps <|startoftext|>, the first max_length-2 tokens and <|endoftext|> as open_clip does.
    """
    if isinstance(texts, str):
        texts = [texts]
    if max_length < 2:
        raise ValueError("max_length must leave room for <|startoftext|> and <|endoftext|>")
    cleaned = [clean_text(t) for t in texts]
    enc = tokenizer(
        cleaned,
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {
        "input_ids": enc["input_ids"].to(torch.long),
        "attention_mask": enc["attention_mask"].to(torch.long),
    }
