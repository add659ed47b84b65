"""What every ``tl-circuits`` sub-command shares: the one-line usage errors, printing, and the
model, transcoder and prompt options."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from tl_circuits.errors import ConfigError, FileFormatError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``prog: error: ... (see --help)``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def model_options(p: argparse.ArgumentParser, transcoders_required: bool = False) -> None:
    p.add_argument("--model", default="default",
                   help="'default' (the embedded SmolLM2-135M-Instruct) or a local Hugging Face "
                   "model directory (Llama, Qwen2, Qwen3, GPT-2, Gemma-2)")
    p.add_argument("--transcoders", metavar="SOURCE", default=None, required=transcoders_required,
                   help="a SAELens transcoder folder (one sub-folder per layer), a circuit-tracer "
                   "CLT folder or config.yaml, or a release (hf://org/repo, org/repo@revision, a "
                   "sae_lens release name; from the Hugging Face cache); default: the demo set "
                   "cached by `tl-circuits demo`")


def prompt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chat", action="store_true",
                   help="PROMPT is a user message: apply the tokenizer's chat template (with the "
                   "generation prompt) instead of encoding PROMPT as plain text")
    p.add_argument("--no-bos", action="store_true",
                   help="do not put the model's BOS token in front of a plain-text PROMPT")


def prompt_of(args: argparse.Namespace) -> Any:
    """The prompt as the library takes it: the text, or one user message with --chat."""
    text = args.prompt
    if not text.strip():
        raise ConfigError("the prompt is empty; give some text, e.g. \"The capital of France is\".")
    if getattr(args, "chat", False):
        if getattr(args, "no_bos", False):
            raise ConfigError("--no-bos applies to plain-text prompts; with --chat the chat "
                              "template decides the special tokens")
        return [{"role": "user", "content": text}]
    return text


def existing(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise FileFormatError(f"no {what} at {path}: check the path.")
    return path
