"""Build the example's model: a tiny GPT-2 (2 layers, width 64) with RANDOM weights, and a
word-level tokenizer trained on instructions.jsonl, saved to ./tiny-gpt2 like a pre-trained model.

It exists so that the example runs offline on a CPU in minutes; it knows nothing before the sweep
trains it. For a real run, point the sweep's ``model:`` at a pre-trained causal LM instead (a local
folder or a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct or Qwen/Qwen2.5-0.5B-Instruct).

Written by the hpo project (CC0 1.0).

    python make_tiny_model.py      # after make_data.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]


def main(data: Path = HERE / "instructions.jsonl", folder: Path = HERE / "tiny-gpt2") -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator((text for row in rows for text in (row["prompt"], row["response"])), trainers.WordLevelTrainer(special_tokens=SPECIAL))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=2, n_positions=64,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    print(f"saved a random-initialised {sum(p.numel() for p in GPT2LMHeadModel(config).parameters()):,}-parameter GPT-2 and its tokenizer to {folder}")


if __name__ == "__main__":
    main()
