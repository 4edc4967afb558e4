"""A MultitaskBert on the tiny checkpoint and its task processors on the tiny data files, for the tests of the
levers and techniques that train it (test_model, test_param_groups, test_technique_mnrl, test_technique_rdrop)."""
import torch

from minibert import BertModel, Tokenizer
from tasks.domain.model import MultitaskBert
from tasks.domain.processors import PROCESSORS

FILES = {"sst": "ids-sst", "para": "quora", "sts": "sts"}


def tiny_multitask(checkpoint, tasks=("sst", "para", "sts"), encoder_dropout=0.0, **kw) -> MultitaskBert:
    """In training mode, the encoder's attention dropout off and its hidden dropout `encoder_dropout`."""
    torch.manual_seed(0)
    encoder = BertModel.from_pretrained(checkpoint, hidden_dropout_prob=encoder_dropout,
                                        attention_probs_dropout_prob=0.0)
    return MultitaskBert(encoder, tasks, tokenizer=Tokenizer.from_pretrained(checkpoint), **kw).train()


def tiny_processor(model, data, task, **kw):
    """The task's processor on 8 training rows in one batch, in the form the model's heads read."""
    form = {"para": {"form": model.para_mode}, "sts": {"form": "siamese" if model.sts_mode == "cosine" else "cross"}}
    return PROCESSORS[task].from_files(task, model.tokenizer, train=data / f"{FILES[task]}-train.csv", max_examples=8,
                                       batch_size=8, **form.get(task, {}), **kw)
