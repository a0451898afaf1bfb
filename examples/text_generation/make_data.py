"""Write instructions.jsonl: synthetic instruction/response pairs for the text-generation example.

Four kinds of instruction, each answerable exactly from its prompt: add two numbers, reverse a
list of words, write words in capitals, and give the first word. The pairs are generated from a
fixed seed, so the file is the same on every machine.

Written by the hpo project and dedicated to the public domain (CC0 1.0); so is the data it writes.

    python make_data.py            # 400 pairs into instructions.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("apple river stone cloud green blue quiet happy small tiger paper light music winter garden "
         "yellow dog cat tree house road bird fish star moon sun rain snow wind fire").split()


def pair(rng: random.Random) -> dict[str, str]:
    kind = rng.choice(("add", "reverse", "capitals", "first"))
    if kind == "add":
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        return {"prompt": f"Add {a} and {b} .\nAnswer :", "response": str(a + b)}
    words = rng.sample(WORDS, rng.randint(2, 4))
    if kind == "reverse":
        return {"prompt": f"Reverse the words : {' '.join(words)}\nAnswer :", "response": " ".join(reversed(words))}
    if kind == "capitals":
        return {"prompt": f"Write in capitals : {' '.join(words)}\nAnswer :", "response": " ".join(word.upper() for word in words)}
    return {"prompt": f"Give the first word : {' '.join(words)}\nAnswer :", "response": words[0]}


DEFAULT_PATH = Path(__file__).with_name("instructions.jsonl")


def main(count: int = 400, seed: int = 0, path: Path = DEFAULT_PATH) -> None:
    rng = random.Random(seed)
    lines: dict[str, None] = {}  # distinct pairs only: a pair in both the training and the test split would inflate the test score
    while len(lines) < count:
        lines[json.dumps(pair(rng)) + "\n"] = None
    path.write_text("".join(lines))
    print(f"wrote {count} pairs to {path}")


if __name__ == "__main__":
    main()
