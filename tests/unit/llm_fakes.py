"""Stand-ins for a language model in unit tests: no download, no real text generation.

``CharTok`` is a character tokenizer (one token per character, IDs 3..127; pad 0, BOS 1,
end-of-turn 2; left padding; a plain chat template) and ``tiny_lm()`` wraps a randomly
initialised one-layer Llama with it in the course's ``LM``."""
from __future__ import annotations

import torch

from course_lib.llm.models import LM


class _Batch(dict):
    def to(self, device):
        return _Batch({k: v.to(device) for k, v in self.items()})


class CharTok:
    pad_token_id, eos_token_id, bos_token_id, padding_side = 0, 2, 1, "left"

    def get_vocab(self):
        return {"<pad>": 0, "<s>": 1, "</s>": 2}

    def encode(self, text, add_special_tokens=False):
        return [3 + (ord(c) % 125) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i - 3) for i in ids if i >= 3)

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(list(r)) for r in rows]

    def __call__(self, texts, return_tensors="pt", padding=True, truncation=False, max_length=None,
                 add_special_tokens=False):
        seqs = [self.encode(t) for t in texts]
        width = max(map(len, seqs))
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        return _Batch(input_ids=ids, attention_mask=mask)

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"


def tiny_lm(seed: int = 0) -> LM:
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      pad_token_id=0, eos_token_id=2, bos_token_id=1)
    return LM(LlamaForCausalLM(cfg).eval(), CharTok(), torch.device("cpu"), "tiny")
