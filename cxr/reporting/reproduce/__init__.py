"""``make reproduce-tables`` / ``cxr-reproduce``: every table of both papers, ours beside theirs.

For each table of :data:`cxr.reporting.tables.TABLES` the rows are run through Hydra multirun (``cxr-train -m
experiment=<name> <row overrides> seed=0,1,... | datamodule.fold=0,1,...``), one process per group of
rows that differ in one key. Every job's folder is ``<out>/runs/<run id>``, the id being a hash of
the composed config minus what does not change the result (:func:`cxr.config.runs.config_fingerprint`): a
re-run skips finished jobs (``metrics.json`` there), resumes interrupted ones from their
``checkpoints/last.ckpt``, and a row that two tables share runs once. Then the post-processing sweep
(NMS threshold, box shrinking, single model vs ensemble) runs on the augmentation table's
checkpoints, and the tables (Markdown + CSV, papers' numbers in their own columns) and figures are
written to ``<out>``.

Profiles (:data:`cxr.reporting.reproduce.profiles.PROFILES`): ``smoke`` writes synthetic data in the real
layouts and trains CPU-sized runs (tiny images, 2 epochs, small encoders) so the whole pipeline runs
in minutes; ``paper`` uses the experiments' own settings (the papers') on ``$DATA_ROOT/chest_xray``
and ``$DATA_ROOT/rsna``. Arguments after ``--`` are overrides for every job
(``-- hydra/launcher=slurm trainer.devices=2``).

Modules: :mod:`~cxr.reporting.reproduce.profiles` (how big the runs are), :mod:`~cxr.reporting.reproduce.plan` (jobs and
their multirun sweeps), :mod:`~cxr.reporting.reproduce.launch` (data and ``cxr-train -m`` processes),
:mod:`~cxr.reporting.reproduce.postprocess` (the NMS / box-shrink sweep), :mod:`~cxr.reporting.reproduce.outputs`
(tables, figures, index); the command line is :mod:`cxr.cli.reproduce`.
"""
