"""Studies: grids of training runs on one budget, summarised with paired statistics.

    runner.py       Study: the cells, their records in results.jsonl, the budget check, resume
    stats.py        mean ± sd, the paired 95% interval against a baseline and its verdict, compare()
    report.py       the markdown table and the paired-difference chart every study writes
    phase_cache.py  an ablation's phases (DAE, contrastive), trained once per seed and reused

The studies themselves are commands: tasks/ablate.py (techniques on one task), tasks/levers.py (levers of the
multitask run), gan/study.py (GAN-BERT and AC-GAN-BERT against labelled data).
"""
