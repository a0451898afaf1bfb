"""Instruction pairs for causal language models: reading prompts and responses (or chat
``messages``), tokenising them once, batches whose loss counts the response tokens only, and the
per-epoch evaluation (loss, perplexity, and greedy generations scored against the references).

A sweep tokenises its pairs once (:func:`encode_pairs`) into a :class:`GenerationSplit`: each row
is the prompt's tokens followed by the response's (and the end-of-sequence token), with the
prompt's length kept so that :func:`collate` masks the prompt out of the labels (-100).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from trials.data import DataError, MissingColumn, eval_batches, ragged_take
from trials.generation_metrics import generation_scores, perplexity

IGNORE_INDEX = -100  # labels the loss skips: prompt tokens and padding
DEFAULT_COLUMNS = {"prompt_column": "prompt", "response_column": "response", "messages_column": "messages"}
# Config attributes holding dropout probabilities in common decoder families (GPT-2, Llama/Qwen/Mistral, others).
_DROPOUT_ATTRIBUTES = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout", "dropout")


@dataclass(frozen=True)
class PromptResponses:
    """Prompts (text, or chat messages before the answer) and their responses. ``labels`` are all
    0 (one "class"), so the splitting code that draws and subsamples labelled rows works unchanged."""

    prompts: list[Any]  # str, or a list of {"role", "content"} messages
    responses: list[str]
    labels: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None: all zeros, filled in by __post_init__
    label_names: list[str] = field(default_factory=lambda: ["response"])

    def __post_init__(self) -> None:
        if self.labels is None:
            object.__setattr__(self, "labels", np.zeros(len(self.responses), dtype=np.int64))

    @property
    def texts(self) -> list[str]:
        """What identifies each row (the split digests and the train/test overlap check read it)."""
        return [f"{_as_text(prompt)}\n{response}" for prompt, response in zip(self.prompts, self.responses, strict=True)]

    def take(self, rows: np.ndarray) -> PromptResponses:
        return PromptResponses([self.prompts[i] for i in rows], [self.responses[i] for i in rows], self.labels[rows], self.label_names)


def _as_text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def prompt_responses(frame: pd.DataFrame, prompt_column: str | None = None, response_column: str | None = None,
                     messages_column: str | None = None) -> PromptResponses:
    """The pairs in a table: a prompt and a response column, or (``messages_column`` set, or a
    ``messages`` column and no prompt column) one column of chat messages whose last message is
    the assistant's response."""
    prompt_column = prompt_column or DEFAULT_COLUMNS["prompt_column"]
    response_column = response_column or DEFAULT_COLUMNS["response_column"]
    if messages_column is None and prompt_column not in frame.columns and DEFAULT_COLUMNS["messages_column"] in frame.columns:
        messages_column = DEFAULT_COLUMNS["messages_column"]
    if messages_column is not None:
        return _from_messages(frame, messages_column)
    for name, column in (("data.prompt_column", prompt_column), ("data.response_column", response_column)):
        if column not in frame.columns:
            raise MissingColumn(name, column, frame.columns, also=" (or give data.messages_column)")
    frame = frame[[prompt_column, response_column]].dropna()
    frame = frame[(frame[prompt_column].astype(str).str.strip() != "") & (frame[response_column].astype(str).str.strip() != "")]
    if frame.empty:
        raise DataError("data.source", "no rows with both a prompt and a response")
    return PromptResponses(frame[prompt_column].astype(str).tolist(), frame[response_column].astype(str).tolist())


def _from_messages(frame: pd.DataFrame, column: str) -> PromptResponses:
    if column not in frame.columns:
        raise MissingColumn("data.messages_column", column, frame.columns)
    prompts, responses = [], []
    for number, value in enumerate(frame[column].dropna(), start=1):
        messages = json.loads(value) if isinstance(value, str) else value
        if isinstance(messages, np.ndarray):  # Parquet and DatasetDict give arrays of dicts
            messages = messages.tolist()
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise DataError("data.messages_column", f"row {number} is not a list of {{role, content}} messages; write each row as such a JSON list")
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise DataError("data.messages_column", f"row {number} does not end with an assistant message after a prompt; the last message is what the model learns to answer")
        prompts.append([{"role": str(m["role"]), "content": str(m["content"])} for m in messages[:-1]])
        responses.append(str(messages[-1]["content"]))
    if not prompts:
        raise DataError("data.source", f"no rows with messages in column {column!r}")
    return PromptResponses(prompts, responses)


def render_prompt(tokenizer, prompt: Any) -> str:
    """A prompt as the model reads it: text as written; chat messages through the tokenizer's chat
    template (with the assistant's turn opened), or ``role: content`` lines when it has none."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant: "


@dataclass(frozen=True)
class GenerationSplit:
    """Token ids of prompt + response rows, stored flat (row ``i`` is ``ids[offsets[i]:offsets[i + 1]]``);
    its first ``prompt_lengths[i]`` tokens are the prompt. ``prompts`` (flat ids and offsets, when
    given) are what generations start from: each prompt cut as the registered model cuts it
    (:func:`prompt_limit`), whatever its response; without them, each row's prompt."""

    ids: np.ndarray  # int32
    offsets: np.ndarray  # int64, len = n + 1
    prompt_lengths: np.ndarray  # int64
    labels: np.ndarray  # int64 zeros (see PromptResponses)
    prompts: tuple[np.ndarray, np.ndarray] | None = None  # (int32 ids, int64 offsets)

    def __len__(self) -> int:
        return len(self.prompt_lengths)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> GenerationSplit:
        prompts = ragged_take(*self.prompts, rows) if self.prompts is not None else None
        return GenerationSplit(*ragged_take(self.ids, self.offsets, rows), self.prompt_lengths[rows], self.labels[rows], prompts)

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(prompt ids, response ids) of one row."""
        ids = self.ids[self.offsets[index] : self.offsets[index + 1]]
        return ids[: self.prompt_lengths[index]], ids[self.prompt_lengths[index] :]

    def generation_prompt(self, index: int) -> np.ndarray:
        """The ids a generation for row ``index`` starts from."""
        if self.prompts is None:
            return self.row(index)[0]
        ids, offsets = self.prompts
        return ids[offsets[index] : offsets[index + 1]]


def prompt_limit(max_length: int, max_new_tokens: int) -> int:
    """How many of a prompt's last tokens a generation reads: room for ``max_new_tokens`` new tokens
    within ``max_length``, and at least half of ``max_length``."""
    return max(max_length - max_new_tokens, max_length // 2, 1)


def encode_pairs(tokenizer, pairs: PromptResponses, max_length: int, max_new_tokens: int | None = None) -> GenerationSplit:
    """Tokenise each prompt (with the tokenizer's special tokens, as generation will see it) and
    response (followed by the end-of-sequence token). A row longer than ``max_length`` keeps the
    end of its prompt and the start of its response, the response at most ``max_length - max_length // 2``
    tokens when the prompt needs the rest. With ``max_new_tokens``, each prompt is also kept as
    generations read it: its last :func:`prompt_limit` tokens, cut by the tokenizer (``truncation=True``
    from the left), as the registered model's pipeline cuts it."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    chat = [not isinstance(prompt, str) for prompt in pairs.prompts]
    rows, prompt_lengths = [], []
    for prompt, response, templated in zip(pairs.prompts, pairs.responses, chat, strict=True):
        # a chat template writes its own special tokens
        prompt_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=not (templated and tokenizer.chat_template))["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + eos
        response_ids = response_ids[: max(max_length - min(len(prompt_ids), max_length // 2), 1)]
        prompt_ids = prompt_ids[len(prompt_ids) - (max_length - len(response_ids)) :] if len(prompt_ids) + len(response_ids) > max_length else prompt_ids
        rows.append(prompt_ids + response_ids)
        prompt_lengths.append(len(prompt_ids))
    prompts = _generation_prompts(tokenizer, pairs, prompt_limit(max_length, max_new_tokens)) if max_new_tokens is not None else None
    return GenerationSplit(*_flat(rows), np.asarray(prompt_lengths, dtype=np.int64), np.zeros(len(rows), dtype=np.int64), prompts)


def _flat(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in rows], out=offsets[1:])
    return np.fromiter((token for row in rows for token in row), dtype=np.int32, count=int(offsets[-1])), offsets


def _generation_prompts(tokenizer, pairs: PromptResponses, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's ids as a generation reads them: its last ``limit`` tokens, special tokens kept."""
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        rows = [tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=isinstance(prompt, str) or not tokenizer.chat_template,
                          truncation=True, max_length=limit)["input_ids"] for prompt in pairs.prompts]
    finally:
        tokenizer.truncation_side = side
    return _flat(rows)


def collate(split: GenerationSplit, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """The rows right-padded to the longest among them; ``labels`` are the input ids with the
    prompt tokens and the padding set to -100, so only response tokens count in the loss."""
    lengths = split.lengths[rows]
    input_ids = np.full((len(rows), int(lengths.max())), pad_id, dtype=np.int64)
    labels = np.full_like(input_ids, IGNORE_INDEX)
    attention_mask = np.zeros_like(input_ids)
    for position, row in enumerate(rows):
        ids = split.ids[split.offsets[row] : split.offsets[row + 1]]
        input_ids[position, : len(ids)] = ids
        attention_mask[position, : len(ids)] = 1
        labels[position, split.prompt_lengths[row] : len(ids)] = ids[split.prompt_lengths[row] :]
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask), "labels": torch.from_numpy(labels)}


def shifted_loss(logits: torch.Tensor, labels: torch.Tensor, loss_fn) -> torch.Tensor:
    """``loss_fn`` (cross-entropy ignoring -100) of each position's prediction of the next token."""
    return loss_fn(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1))


def load_causal_lm(model_path: str, dropout: float | None = None) -> nn.Module:
    """Any ``AutoModelForCausalLM`` (GPT-2, Llama, Qwen, SmolLM, ...); ``dropout``, when given,
    replaces its dropout probabilities."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    if dropout is not None:
        for attribute in _DROPOUT_ATTRIBUTES:
            if hasattr(config, attribute):
                setattr(config, attribute, float(dropout))
    return AutoModelForCausalLM.from_pretrained(model_path, config=config)


@functools.lru_cache(maxsize=4)
def tokenizer_for(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def sample_rows(count: int, size: int) -> np.ndarray:
    """The validation rows whose generations are scored: the same ``size`` rows for every trial."""
    if size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(0).choice(count, size=size, replace=False))


@torch.inference_mode()
def evaluate(model: nn.Module, split: GenerationSplit, *, batch_size: int, pad_id: int, model_path: str, max_new_tokens: int,
             samples: int, device, precision=None) -> dict[str, float]:
    """``val_loss`` (mean cross-entropy per response token), ``val_perplexity``, and the exact
    match and token F1 of greedy generations (at most ``max_new_tokens``) for ``samples`` fixed rows."""
    model.eval()
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    loss_sum, tokens = 0.0, 0
    for rows in eval_batches(split, batch_size):
        batch = {key: value.to(device) for key, value in collate(split, rows, pad_id).items()}
        with autocast():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        loss_sum += shifted_loss(logits, batch["labels"], nn.CrossEntropyLoss(reduction="sum")).item()
        tokens += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    loss = loss_sum / max(tokens, 1)
    tokenizer = tokenizer_for(model_path)
    chosen = sample_rows(len(split), samples)
    predictions = generate(model, split, chosen, batch_size=batch_size, pad_id=pad_id, eos_id=tokenizer.eos_token_id, max_new_tokens=max_new_tokens, device=device, autocast=autocast)
    references = [_strip_eos(split.row(i)[1], tokenizer.eos_token_id) for i in chosen]
    decode = functools.partial(tokenizer.decode, skip_special_tokens=True)
    return {"val_loss": loss, "val_perplexity": perplexity(loss),
            **generation_scores([decode(p) for p in predictions], [decode(r) for r in references])}


def generate(model: nn.Module, split: GenerationSplit, rows: np.ndarray, *, batch_size: int, pad_id: int, eos_id: int | None,
             max_new_tokens: int, device, autocast=contextlib.nullcontext) -> list[np.ndarray]:
    """Greedy continuations of the prompts at ``rows`` (:meth:`GenerationSplit.generation_prompt`,
    left-padded in batches), each cut at its first end-of-sequence token."""
    outputs: list[np.ndarray] = []
    for start in range(0, len(rows), batch_size):
        prompts = [split.generation_prompt(i) for i in rows[start : start + batch_size]]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for position, prompt in enumerate(prompts):
            input_ids[position, width - len(prompt) :] = torch.from_numpy(prompt.astype(np.int64))
            attention_mask[position, width - len(prompt) :] = 1
        with autocast():
            # A causal LM (or its PEFT wrapper) has generate; nn.Module's __getattr__ is typed Tensor | Module.
            generated = cast(Callable[..., torch.Tensor], model.generate)(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos_id,
            )
        outputs += [_strip_eos(row[width:], eos_id) for row in generated.cpu().numpy()]
    return outputs


def _strip_eos(ids: Sequence[int] | np.ndarray, eos_id: int | None) -> np.ndarray:
    ids = np.asarray(ids)
    if eos_id is None:
        return ids
    ends = np.flatnonzero(ids == eos_id)
    return ids[: ends[0]] if len(ends) else ids
