"""A learner's tour: follow your own sentence through BERT, step by step, with shapes, numbers and pictures.

    python -m minibert.tour "A cat sits on the mat."                           # one sentence
    python -m minibert.tour "A cat sits on the mat." "A dog lies on the rug."  # a pair: [CLS] a [SEP] b [SEP]
    python -m minibert.tour "..." --model FOLDER --compare FINE_TUNED --layer 2 --head 5 --out runs/tour

One sentence is followed alone; two are followed as one pair `[CLS] a [SEP] b [SEP]`, the way a cross-encoder
reads them; of three or more, the first. Every sentence is also encoded on its own for its sentence vector.
Nothing here re-implements the model: one call of BertModel.forward with output_attentions and
output_hidden_states, forward hooks to read the tensors between its modules, and the embedding tables called
by hand to split their sum into parts. The attention maps drawn are the model's own probabilities.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from .checkpoint import _check_and_load, hf_to_minibert, read_state_dict
from .config import BertConfig
from .functional import attention, split_heads
from .hub import resolve_model_dir
from .model import BertModel, Embeddings, FeedForward, Layer, Pooler, SelfAttention
from .tokenizer import Tokenizer
from .tour_plots import draw_grid, draw_panels

ROOT = Path(__file__).resolve().parents[1]
HOOKED = ("attn.query", "attn.key", "attn.value", "attn", "attn_norm", "ffn.up", "ffn", "ffn_norm")
AXES = ("key (looked at)", "query (looking)")


def where(fn) -> str:
    """'minibert/model.py:109 SelfAttention.forward': looked up live, so it stays right as the code moves."""
    path = Path(inspect.getsourcefile(fn)).resolve()
    path = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    return f"{path}:{inspect.getsourcelines(fn)[1]} {fn.__qualname__}"


def step(title: str, fn) -> None:
    print(f"\n== {title}   [{where(fn)}]")


def shape(x: torch.Tensor) -> str:
    return str(tuple(x.shape))


def size(x: torch.Tensor) -> float:
    """The mean over tokens of each token vector's L2 norm: one number for how large a (.., T, C) tensor is."""
    return x.norm(dim=-1).mean().item()


# ---- loading: a checkpoint, or a fine-tuned multitask folder with its heads --------------------------------
def load(name_or_path=None):
    """(encoder, tokenizer, the fine-tuned model or None, its "minibert_heads" block). A fine-tuned folder names
    the class that rebuilds its heads ("class": "module:Class"); minibert imports it by that name only, so the
    core never depends on the application above it."""
    folder = resolve_model_dir(name_or_path)
    tok = Tokenizer.from_pretrained(folder)
    heads = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("minibert_heads")
    if not heads:
        return BertModel.from_pretrained(folder), tok, None, {}
    cls = _heads_class(heads.get("class"))
    if cls is not None:
        multitask = cls.from_pretrained(folder).eval()
        return multitask.bert, tok, multitask, heads
    print(f"note: {folder} has task heads, but no class that rebuilds them could be imported "
          f"({heads.get('class') or 'the folder names none: re-save it with a newer minibert'}): the encoder only")
    state, source = read_state_dict(folder)
    ours, unexpected = hf_to_minibert({k: v for k, v in state.items() if not k.startswith("heads.")})
    encoder = BertModel(BertConfig.from_json_file(folder / "config.json"))
    _check_and_load(encoder, ours, unexpected, source)
    return encoder.eval(), tok, None, heads


# where a class named by a folder saved before it moved lives now
MOVED = {"tasks.model": "tasks.domain.model"}


def _heads_class(spec: Optional[str]):
    """The class a folder names as "module:Class", or None where it cannot be imported or cannot load a folder."""
    if not spec or ":" not in spec:
        return None
    module, _, name = spec.partition(":")
    module = MOVED.get(module, module)
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return cls if hasattr(cls, "from_pretrained") else None


def run_hooked(model: BertModel, enc) -> tuple:
    """One forward pass that also keeps, per layer, each hooked module's (input, output)."""
    seen, handles = {}, []
    for i, layer in enumerate(model.layers):
        for name in HOOKED:
            def keep(module, args, out, key=(i, name)):  # clone: inference overwrites ffn.up's output in place
                out = out[0] if isinstance(out, tuple) else out
                seen[key] = (args[0].detach().clone(), out.detach().clone())
            handles.append(layer.get_submodule(name).register_forward_hook(keep))
    try:
        out = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                    output_hidden_states=True, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    return out, seen


# ---- the walk: every step in the order the code runs --------------------------------------------------------
def walk(model: BertModel, tok: Tokenizer, texts: Sequence[str]):
    """Print one sentence's (or one pair's) way through the encoder; returns the tokens and the model output."""
    cfg = model.config
    enc = tok(*texts)  # (a) or (a, b): B = 1
    ids, types, mask = enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]
    tokens = tok.convert_ids_to_tokens(ids[0].tolist())
    step("1. Tokenizer: text -> word pieces -> ids", Tokenizer.__call__)
    print("  word pieces     ", " ".join(tokens))
    print("  input_ids       ", shape(ids), "(B, T) =", ids[0].tolist())
    print("  token_type_ids  ", shape(types), "=", types[0].tolist(), " (0: first segment, 1: second)")
    print("  attention_mask  ", shape(mask), "=", mask[0].tolist(), " (1: a real token, 0: padding)")

    with torch.no_grad():
        out, seen = run_hooked(model, enc)
        emb = model.embeddings
        parts = {"word": emb.word(ids), "position": emb.position(torch.arange(ids.size(1))),
                 "token type": emb.token_type(types)}
        total = parts["word"] + parts["position"] + parts["token type"]
        x0 = emb.norm(total)
    step("2. Embeddings: word + position + token type, then LayerNorm", Embeddings.forward)
    print("  (|x| below: the L2 norm of a token's vector, averaged over the tokens)")
    for name, part in parts.items():
        print(f"  {name:<11} {shape(part):<14} |x| {size(part):7.3f}" + ("   (T, C): one row per position, "
              "the same for every sentence" if name == "position" else ""))
    print(f"  sum         {shape(total):<14} |x| {size(total):7.3f}")
    print(f"  LayerNorm   {shape(x0):<14} |x| {size(x0):7.3f}   = hidden_states[0] of BertModel.forward "
          f"(max difference {(x0 - out.hidden_states[0]).abs().max().item():.1e})")

    nh, hs = cfg.num_attention_heads, cfg.head_size
    for i in range(cfg.num_hidden_layers):
        step(f"3.{i} Layer {i} of {cfg.num_hidden_layers}: attention, add & norm, feed-forward, add & norm",
             Layer.forward)
        q, k, v = (split_heads(seen[i, f"attn.{n}"][1], nh) for n in ("query", "key", "value"))
        print(f"  q, k, v      {shape(q)} each = (B, nh, T, hs): {nh} heads of {hs}   [{where(SelfAttention.forward)}]")
        scores, probs = q @ k.transpose(-2, -1) / math.sqrt(hs), out.attentions[i]
        same = (torch.softmax(scores, -1) - probs).abs().max().item()  # B = 1: no padding, so no mask to add
        print(f"  scores       {shape(scores)} = q kᵀ / √{hs}, from {scores.min().item():.2f} "
              f"to {scores.max().item():.2f}   [{where(attention)}]")
        print(f"  softmax      each row sums to 1: the model's out.attentions[{i}] {shape(probs)} "
              f"(softmax(scores) differs by {same:.1e})")
        weight, key = probs[0, :, 0].max(-1)  # for each head, the key that [CLS] (query 0) weighs most
        picks = [f"h{h}→{tokens[j]} {w:.2f}" for h, (w, j) in enumerate(zip(weight.tolist(), key.tolist()))]
        for start in range(0, nh, 6):
            print("  [CLS] looks at" if start == 0 else " " * 16, "  ".join(picks[start:start + 6]))
        x, a = out.hidden_states[i], seen[i, "attn"][1]
        print(f"  add & norm   attn_norm(x + attention): |x| {size(x):.2f} + |attention| {size(a):.2f} "
              f"-> |sum| {size(seen[i, 'attn_norm'][0]):.2f} -> LayerNorm |x| {size(seen[i, 'attn_norm'][1]):.2f}")
        up, down = seen[i, "ffn.up"][1], seen[i, "ffn"][1]
        print(f"  feed-forward {cfg.hidden_size} -> {cfg.intermediate_size} {shape(up)}, {cfg.hidden_act}, "
              f"-> {cfg.hidden_size} {shape(down)}   [{where(FeedForward.forward)}]")
        print(f"  add & norm   ffn_norm(x + feed-forward): |sum| {size(seen[i, 'ffn_norm'][0]):.2f} "
              f"-> LayerNorm |x| {size(out.hidden_states[i + 1]):.2f} = hidden_states[{i + 1}]")

    step("4. Pooler: tanh(W h[CLS] + b), the vector BERT's next-sentence head was trained on", Pooler.forward)
    if out.pooler_output is not None:
        print(f"  pooler_output {shape(out.pooler_output)} |v| {size(out.pooler_output):.3f}")
    return tokens, out


def sentence_vectors(model: BertModel, tok: Tokenizer, sentences: Sequence[str]):
    """Each sentence encoded alone (one padded batch), mean-pooled: (N, C), and their cosines (N, N)."""
    step("5. Sentence vectors: each sentence alone, the mean of its last hidden states over real tokens",
         sentence_vectors)
    enc = tok(list(sentences))
    with torch.no_grad():
        hidden = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).last_hidden_state  # (N, T, C)
    real = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, T, 1): 1 for real tokens, 0 for padding
    vectors = (hidden * real).sum(1) / real.sum(1)  # (N, C), the formula of tasks/domain/model.py's mean_pool
    print(f"  batch {shape(enc['input_ids'])} (B, T), padded -> last_hidden_state (B, T, C) -> mean over real tokens "
          f"{shape(vectors)}")
    cos = F.cosine_similarity(vectors[:, None], vectors[None], dim=-1)  # (N, N): every two sentences
    if len(sentences) == 2:
        print(f"  cosine similarity of the two sentences: {cos[0, 1].item():.4f}")
    elif len(sentences) > 2:
        print("  cosine similarities:")
        for row in cos.tolist():
            print("   " + " ".join(f"{c:7.4f}" for c in row))
    return vectors, cos


def predict(multitask, tok: Tokenizer, sentences: Sequence[str], heads: Dict, title: str) -> None:
    """The fine-tuned heads' answers, through MultitaskBert's batch-level methods on batches built here."""
    step(title, type(multitask).sentiment_logits)
    names = heads.get("labels") or heads.get("label_names") or {}  # {"sst": [...], ...}, [...] or {"0": ...}
    names = next((names[k] for k in ("sst", "cfimdb", "sentiment") if k in names), names)
    names = dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items() if k.isdigit()}
    enc = tok(list(sentences))
    with torch.no_grad():
        if "sentiment" in multitask.heads:
            for s, p in zip(sentences, multitask.sentiment_logits(enc).softmax(-1)):
                c = int(p.argmax())
                label = f"{c} {names.get(c, '')}".strip()
                print(f"  sentiment    class {label} (p {p[c].item():.2f}): {s!r}")
        if len(sentences) >= 2:
            a, b = tok(sentences[0]), tok(sentences[1])
            pair = {f"{key}_{n}": e[key] for n, e in ((1, a), (2, b)) for key in e}
            if "para" in multitask.tasks:
                print(f"  paraphrase   probability {torch.sigmoid(multitask.paraphrase_logits(pair)).item():.3f}")
            if "sts" in multitask.tasks:
                print(f"  similarity   {5 * multitask.similarity_scores(pair).item():.2f} on the 0-5 scale")


# ---- the whole tour ----------------------------------------------------------------------------------------
def tour(sentences: Sequence[str], model=None, out: Optional[str] = "runs/tour", layer: int = 0, head: int = 0,
         compare=None) -> dict:
    """Print the walk and write the pictures (none when out is None); returns what it computed and drew."""
    encoder, tok, multitask, heads = load(model)
    cfg = encoder.config
    if not (0 <= layer < cfg.num_hidden_layers and 0 <= head < cfg.num_attention_heads):
        raise SystemExit(f"--layer must be in 0..{cfg.num_hidden_layers - 1}, "
                         f"--head in 0..{cfg.num_attention_heads - 1}")
    print(f"model: {model or 'all-MiniLM-L6-v2 (embedded)'}: {cfg.num_hidden_layers} layers, hidden size "
          f"C = {cfg.hidden_size}, {cfg.num_attention_heads} heads of hs = {cfg.head_size}, "
          f"vocabulary V = {cfg.vocab_size}")
    texts = list(sentences) if len(sentences) == 2 else [sentences[0]]
    tokens, output = walk(encoder, tok, texts)
    vectors, cos = sentence_vectors(encoder, tok, sentences)
    if multitask is not None:
        predict(multitask, tok, sentences, heads, "6. Task heads of the fine-tuned model")
    att = torch.stack(output.attentions)[:, 0]  # (L, nh, T, T): the model's own probabilities
    result = dict(tokens=tokens, attentions=att, vectors=vectors, cosine=cos, drawn={})
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        result["drawn"]["attention.png"] = draw_grid(att, tokens, folder / "attention.png", model or "all-MiniLM-L6-v2")
        name = f"attention_layer{layer}_head{head}.png"
        panel = (att[layer, head], f"layer {layer}, head {head}", "viridis", (0, 1))
        result["drawn"][name], = draw_panels(folder / name, [panel], tokens, tokens, 0.42, *AXES)
        if len(sentences) > 1:
            labels = [f"{i + 1}: {s if len(s) <= 40 else s[:37] + '...'}" for i, s in enumerate(sentences)]
            result["drawn"]["similarity.png"], = draw_panels(
                folder / "similarity.png", [(cos, "cosine similarity of the sentence vectors", "coolwarm", (-1, 1))],
                [str(i + 1) for i in range(len(sentences))], labels, 0.9)
        if compare is not None:
            compare_with(compare, sentences, texts, tokens, att, folder, layer, head, result)
        print(f"\npictures in {folder}/: " + ", ".join(sorted(result["drawn"])))
    return result


def compare_with(compare, sentences, texts, tokens, att, folder: Path, layer: int, head: int, result: dict) -> None:
    """The same input through a fine-tuned model: its maps, the chosen head beside ours, which heads moved most."""
    encoder, tok, multitask, heads = load(compare)
    print(f"\n== Compare: the same input through {compare}")
    enc = tok(*texts)
    with torch.no_grad():
        other = torch.stack(encoder(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                                    output_attentions=True).attentions)[:, 0]
    if tok.convert_ids_to_tokens(enc["input_ids"][0].tolist()) != tokens or other.shape != att.shape:
        print(f"  other word pieces or another shape of model ({tuple(other.shape)}): no comparison of attention")
    else:
        result["drawn"]["compare_attention.png"] = draw_grid(other, tokens, folder / "compare_attention.png",
                                                             str(compare))
        name = f"compare_layer{layer}_head{head}.png"
        a, b = att[layer, head], other[layer, head]
        panels = [(a, f"pretrained: layer {layer}, head {head}", "viridis", (0, 1)),
                  (b, "fine-tuned", "viridis", (0, 1)), (b - a, "fine-tuned − pretrained", "RdBu_r", (-1, 1))]
        result["drawn"][name] = torch.stack(draw_panels(folder / name, panels, tokens, tokens, 0.42, *AXES))
        moved = 0.5 * (other - att).abs().sum(-1).mean(-1)  # (L, nh): the share of each row's attention that moved
        L, nh = moved.shape
        result["drawn"]["compare_change.png"], = draw_panels(
            folder / "compare_change.png", [(moved, "share of attention moved by fine-tuning\n(mean over query rows)",
                                             "magma", (0, max(moved.max().item(), 0.01)))],
            [f"h{h}" for h in range(nh)], [f"layer {l}" for l in range(L)], 0.55, "head")
        top = sorted(((c, l, h) for l, row in enumerate(moved.tolist()) for h, c in enumerate(row)), reverse=True)[:3]
        print("  heads whose attention moved most (share of a row moved, mean over rows): "
              + ", ".join(f"layer {l} head {h} {c:.2f}" for c, l, h in top))
    if multitask is not None:
        predict(multitask, tok, sentences, heads, f"Task heads of {compare}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="+", help="one sentence, a pair, or several (for the similarity matrix)")
    parser.add_argument("--model", default=None, help="checkpoint name or folder (default: embedded all-MiniLM-L6-v2)")
    parser.add_argument("--out", default="runs/tour", help="folder for the PNGs (default: runs/tour)")
    parser.add_argument("--layer", type=int, default=0, help="the layer of the head drawn large (default 0)")
    parser.add_argument("--head", type=int, default=0, help="the head drawn large (default 0)")
    parser.add_argument("--compare", default=None, metavar="FOLDER", help="a fine-tuned model to draw beside this one")
    args = parser.parse_args(argv)
    return tour(args.sentences, args.model, args.out, args.layer, args.head, args.compare)


if __name__ == "__main__":
    main()
