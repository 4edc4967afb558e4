"""The task domain: the CS224N tasks from their files to their scores, independent of how training runs.

    data.py          reading the files (bad rows named and counted), examples, collators, samplers, held-out rows
    processors.py    one small processor per dataset: its batches, its loss, its evaluation
    model.py         MultitaskBert: one encoder, a head per task (sentiment, paraphrase, similarity)
    losses.py        the similarity losses (cosine MSE, Pearson correlation)
    metrics.py       accuracy, Pearson r, the overall score, the prediction files
    para_augment.py  Quora pairs from symmetry and transitivity
    saved_model.py   the model folder a run leaves (weights, tokenizer, config, heads, card; loadable by
                     transformers and sentence-transformers), and how it loads
"""
