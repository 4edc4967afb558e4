"""Sentence embeddings from any encoder or saved model, written to .npy; a cosine similarity matrix on request.

    python tasks/embed.py "A cat sits on the mat." "A dog runs." "Stocks fell." --similarity
    python tasks/embed.py --input sentences.txt --output embeddings.npy --normalize
    python tasks/embed.py --model runs/multitask/model --input sentences.txt --output emb.npy

--input holds one sentence per line (blank lines skipped). Works on a plain encoder (the embedded
all-MiniLM-L6-v2 by default, a folder or a hub id: mean pooling unless --pooling) and on a saved model
(its own pooling). Row i of the .npy array is the i-th sentence.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable, not this folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tasks.launch.cli import HelpFormatter, add_shared_flag  # noqa: E402
from tasks.engine.devices import pick_device  # noqa: E402
from tasks.launch.inference import load_or_exit  # noqa: E402
from tasks.domain.model import POOLINGS  # noqa: E402

SHOWN = 12  # the similarity matrix is for a few sentences


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("sentences", nargs="*", help="sentences to embed (or --input)")
    parser.add_argument("--input", default=None, metavar="FILE", help="a UTF-8 text file, one sentence per line")
    parser.add_argument("--output", default=None, metavar="FILE", help="where to write the (N, C) float32 array (.npy)")
    parser.add_argument("--similarity", action="store_true", help="print the cosine similarity of every pair")
    add_shared_flag(parser, "model", help="an encoder or saved model: a folder or a hub id (default: the embedded "
                                          "all-MiniLM-L6-v2)")
    parser.add_argument("--pooling", choices=POOLINGS, default=None, help="default: the saved model's, else mean")
    parser.add_argument("--normalize", action="store_true", help="scale each embedding to length 1")
    parser.add_argument("--batch_size", type=int, default=32, help="sentences per forward pass")
    add_shared_flag(parser, "use_gpu")
    args = parser.parse_args(argv)
    if not args.output and not args.similarity:
        parser.error("nothing to do: give --output FILE.npy and/or --similarity")
    return args


def read_sentences(args) -> list:
    sentences = list(args.sentences)
    if args.input:
        try:
            text = Path(args.input).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            sys.exit(f"embed.py: cannot read {args.input}: {err}")
        sentences += [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        sys.exit("embed.py: no sentences: pass them as arguments or with --input")
    return sentences


def similarity_table(sentences, emb: np.ndarray) -> str:
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    sim = unit @ unit.T
    n = min(len(sentences), SHOWN)
    lines = ["      " + " ".join(f"{j:>6}" for j in range(n))]
    lines += [f"{i:>5} " + " ".join(f"{sim[i, j]:6.3f}" for j in range(n)) for i in range(n)]
    lines += [f"{i:>5}  {s[:70]}" for i, s in enumerate(sentences[:n])]
    if len(sentences) > n:
        lines.append(f"(the first {n} of {len(sentences)} sentences)")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    sentences = read_sentences(args)
    model = load_or_exit(args.model, "embed.py", allow_no_heads=True)
    if args.pooling:
        model.pooling = args.pooling
    model.to(pick_device(args.use_gpu))
    emb = model.encode(sentences, batch_size=args.batch_size, normalize_embeddings=args.normalize,
                       show_progress_bar=len(sentences) >= 1000)  # (N, C) float32
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.output, emb)
        print(f"{emb.shape[0]} embeddings of size {emb.shape[1]} written to {args.output}")
    if args.similarity:
        print(similarity_table(sentences, emb))
    return emb


if __name__ == "__main__":
    main()
