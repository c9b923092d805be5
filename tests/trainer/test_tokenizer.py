"""The offline CLIP tokenizer gives open_clip's ids (and so SAM 3's).

open_clip is not a dependency: its vocabulary and ids for PROMPTS were recorded once in
open_clip_reference.json (see its "about"), and the tokenizer built from the shipped merges must reproduce them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from trainer.tokenizer import (
    BOS_TOKEN_ID,
    EOS_TOKEN_ID,
    MERGES_FILE,
    NUM_MERGES,
    VOCAB_SIZE,
    build_clip_tokenizer_files,
    ensure_tokenizer_files,
    load_tokenizer,
    tokenize,
)

PROMPTS = [
    "red circle",
    "traffic light",
    "Traffic LIGHT",
    "RED Circle!!!",
    "a photo of a dog.",
    "don't, won't, it's, they'll, we've, I'm, you'd",
    "café crème brûlée",
    "naïve Straße İstanbul ÄÖÜ",
    "日本語のテキスト",
    "emoji 🚦🚗 road",
    "3.14159 and 2024-05-01 at 10:30pm",
    "x-ray_machine #42 @home (v2) [beta] {x} <tag> 50% $9.99",
    "  lots   of\twhitespace\n  here ",
    "&amp; html &lt;b&gt; entities",
    "",
    "a " + "very long prompt " * 30 + "that must be truncated",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((Path(__file__).with_name("open_clip_reference.json")).read_text(encoding="utf-8"))


def _non_pad(ids: torch.Tensor, mask: torch.Tensor) -> list[int]:
    return ids[mask.bool()].tolist()


def test_reference_covers_the_prompts() -> None:
    assert list(REFERENCE["ids_32"]) == PROMPTS


def test_files_match_open_clip_vocabulary(tmp_path: Path) -> None:
    out = build_clip_tokenizer_files(tmp_path / "tok")
    assert out == tmp_path / "tok"
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    merges = (out / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len(merges) - 1 == NUM_MERGES == 48894
    assert len(vocab) == VOCAB_SIZE == 49408
    assert vocab["<|startoftext|>"] == BOS_TOKEN_ID == 49406
    assert vocab["<|endoftext|>"] == EOS_TOKEN_ID == 49407
    # Same token -> id table as open_clip, apart from the spelling of its two special tokens.
    digest = hashlib.sha256(json.dumps(vocab, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert digest == REFERENCE["vocab_sha256"]
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        assert json.loads((out / name).read_text())["eos_token"] == "<|endoftext|>"


def test_shipped_merges_equal_the_bundled_models() -> None:
    """The shipped merges are the bundled base model's (and so the hub models') BPE merges."""
    import gzip

    bundled = json.loads((REPO_ROOT / "models/sam3-tiny-shapes/tokenizer.json").read_text(encoding="utf-8"))
    with gzip.open(MERGES_FILE, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    assert [tuple(line.split()) for line in lines[1:]] == [tuple(m) for m in bundled["model"]["merges"]]


def test_ids_equal_open_clip(tokenizer) -> None:
    enc = tokenize(tokenizer, PROMPTS)
    assert enc["input_ids"].shape == (len(PROMPTS), 32)
    assert enc["input_ids"].dtype == torch.long and enc["attention_mask"].dtype == torch.long
    for i, prompt in enumerate(PROMPTS):
        ours = _non_pad(enc["input_ids"][i], enc["attention_mask"][i])
        assert ours == REFERENCE["ids_32"][prompt], prompt
        assert ours[0] == BOS_TOKEN_ID and ours[-1] == EOS_TOKEN_ID


def test_known_ids(tokenizer) -> None:
    enc = tokenize(tokenizer, ["red circle", "traffic light", "RED CIRCLE"])
    assert _non_pad(enc["input_ids"][0], enc["attention_mask"][0]) == [49406, 736, 7117, 49407]
    assert _non_pad(enc["input_ids"][1], enc["attention_mask"][1]) == [49406, 3399, 1395, 49407]
    assert torch.equal(enc["input_ids"][2], enc["input_ids"][0])  # lower-cased


def test_padding_and_truncation(tokenizer) -> None:
    long = REFERENCE["long_prompt"]
    enc = tokenize(tokenizer, ["red circle", long])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    # Padding as Sam3Processor does it: to 32 with <|endoftext|>, masked out.
    assert ids[0, 4:].eq(EOS_TOKEN_ID).all() and mask[0].tolist() == [1] * 4 + [0] * 28
    # Truncation keeps <sot>, the first 30 tokens and <eot>, as open_clip does.
    assert mask[1].all() and ids[1, 0] == BOS_TOKEN_ID and ids[1, -1] == EOS_TOKEN_ID
    assert ids[1].tolist() == REFERENCE["long_ids_32"]
    # Other lengths work too.
    short = tokenize(tokenizer, [long, "a"], max_length=8)
    assert short["input_ids"].shape == (2, 8)
    assert short["input_ids"][0].tolist() == REFERENCE["long_ids_8"]


def test_matches_sam3_processor_text_path(tokenizer) -> None:
    """For plain prompts tokenize() equals what Sam3Processor asks the tokenizer for."""
    prompts = ["red circle", "traffic light", "A Photo of 2 cats"]
    processor_style = tokenizer(prompts, padding="max_length", max_length=32, return_tensors="pt")
    ours = tokenize(tokenizer, prompts)
    assert torch.equal(ours["input_ids"], processor_style["input_ids"])
    assert torch.equal(ours["attention_mask"], processor_style["attention_mask"])


def test_cache_dir_argument_env_and_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "explicit"
    tok = load_tokenizer(explicit)
    assert (explicit / "vocab.json").is_file() and len(tok) == VOCAB_SIZE
    mtime = (explicit / "vocab.json").stat().st_mtime_ns
    load_tokenizer(explicit)
    assert (explicit / "vocab.json").stat().st_mtime_ns == mtime  # built once
    monkeypatch.setenv("SAMTUNE_TOKENIZER_CACHE", str(tmp_path / "from-env"))
    assert ensure_tokenizer_files() == tmp_path / "from-env"
    assert (tmp_path / "from-env" / "merges.txt").is_file()
    assert not list(tmp_path.glob(".*tmp-*"))  # no temporary directories left behind


def test_incomplete_cache_is_completed_without_deleting(tmp_path: Path) -> None:
    target = tmp_path / "partial"
    target.mkdir()
    (target / "vocab.json").write_text("{}")  # e.g. an interrupted older writer
    (target / "notes.txt").write_text("keep me")
    ensure_tokenizer_files(target)
    assert (target / "notes.txt").read_text() == "keep me"
    assert len(json.loads((target / "vocab.json").read_text(encoding="utf-8"))) == VOCAB_SIZE


def test_concurrent_builders(tmp_path: Path) -> None:
    """Two processes and three threads build the same cache directory at once: all succeed, one result."""
    target = tmp_path / "race"
    script = (
        "import sys; from pathlib import Path; from trainer.tokenizer import ensure_tokenizer_files;"
        "print(ensure_tokenizer_files(Path(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(target)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errors: list[BaseException] = []

    def build() -> None:
        try:
            ensure_tokenizer_files(target)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert not errors
    assert all(p.returncode == 0 for p in procs)
    assert set(outputs) == {str(target)}
    enc = tokenize(load_tokenizer(target), ["red circle"])
    assert _non_pad(enc["input_ids"][0], enc["attention_mask"][0]) == [49406, 736, 7117, 49407]
    assert not list(tmp_path.glob(".*tmp-*"))
