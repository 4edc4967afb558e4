"""Print minibert's largest differences from transformers.BertModel, per output (the figures behind the tests).

    python benchmarks/parity.py

Random configs (saved by HF as safetensors) and the embedded all-MiniLM-L6-v2 on 64 real SST dev sentences,
fp32, eval mode, padded batches. Reuses the helpers of tests/test_parity.py so the numbers are the tests'.
"""
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
import transformers  # noqa: E402  (test-only reference)
from conftest import RANDOM_CONFIGS, hf_bert_config  # noqa: E402
from test_parity import _inputs, _max_diffs, _randomise  # noqa: E402
from _datafiles import read_columns  # noqa: E402

from minibert import BertModel, embedded_model_dir  # noqa: E402
from minibert.checkpoint import minibert_to_hf  # noqa: E402


def random_config_rows(tmp: Path):
    for name, values in RANDOM_CONFIGS.items():
        torch.manual_seed(1234)
        cfg = hf_bert_config(**values, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        hf = transformers.BertModel(cfg)
        _randomise(hf)
        hf.save_pretrained(tmp / name)
        ref = transformers.BertModel.from_pretrained(tmp / name, attn_implementation="eager").eval()
        ours = BertModel.from_pretrained(tmp / name).train()
        ids, mask, types = _inputs(cfg.vocab_size, cfg.type_vocab_size)
        with torch.no_grad():
            diffs = _max_diffs(ours(ids, mask, types, output_hidden_states=True, output_attentions=True),
                               ref(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
                                   output_attentions=True))
        ref.train()
        w = torch.randn(cfg.hidden_size)
        for model, out in ((ours, ours(ids, mask, types)), (ref, ref(ids, attention_mask=mask, token_type_ids=types))):
            ((out.last_hidden_state * w).pow(2).mean() + (out.pooler_output * w).sum()).backward()
        ref_params = dict(ref.named_parameters())
        rel = max(((g - ref_params[n].grad).norm() / ref_params[n].grad.norm()).item()
                  for n, g in minibert_to_hf({k: p.grad for k, p in ours.named_parameters()}).items()
                  if not n.endswith("attention.self.key.bias"))  # its true gradient is 0: see the test
        yield name, {**diffs, "grad (max rel)": rel}


def minilm_row():
    folder = embedded_model_dir()
    ours = BertModel.from_pretrained()
    ref = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    tok = transformers.BertTokenizerFast.from_pretrained(folder)
    sentences = [row[0] for row in read_columns("ids-sst-dev.csv", "sentence", limit=64)]
    worst = {}
    for start in range(0, len(sentences), 16):
        batch = tok(sentences[start:start + 16], padding=True, return_tensors="pt")
        real = batch["attention_mask"].bool()
        with torch.no_grad():
            a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], output_hidden_states=True,
                     output_attentions=True)
            b = ref(**batch, output_hidden_states=True, output_attentions=True)
        diffs = {"last_hidden_state": (a.last_hidden_state - b.last_hidden_state)[real].abs().max().item(),
                 "pooler_output": (a.pooler_output - b.pooler_output).abs().max().item(),
                 "hidden_states": max((x - y)[real].abs().max().item() for x, y in zip(a.hidden_states, b.hidden_states)),
                 "attentions": max((x - y).transpose(1, 2)[real].abs().max().item() for x, y in zip(a.attentions, b.attentions))}
        worst = {k: max(worst.get(k, 0.0), v) for k, v in diffs.items()}
    return worst


def main():
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        rows = dict(random_config_rows(Path(tmp)))
    rows["all-MiniLM-L6-v2 (real tokens)"] = minilm_row()
    columns = ["last_hidden_state", "pooler_output", "hidden_states", "attentions", "grad (max rel)"]
    print("| model | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, diffs in rows.items():
        print(f"| {name} | " + " | ".join(f"{diffs[c]:.1e}" if c in diffs else "" for c in columns) + " |")


if __name__ == "__main__":
    main()
