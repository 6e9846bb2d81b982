"""Training framework (needs torch: ``pip install -e '.[train]'``).

One job per module; only ``emzoo train``, ``emzoo package`` and ``emzoo evaluate`` import them, so
``import emzoo`` stays free of torch:

- :mod:`~emzoo.train.usecase`: the contract between a use case, the trainer and the packager
- :mod:`~emzoo.train.discovery`: finds the use cases in ``training/`` (or ``EMZOO_TRAINING_DIR``)
- :mod:`~emzoo.train.params`: the documented ``params.yaml`` of a use case and ``--set`` overrides
- :mod:`~emzoo.train.split`, :mod:`~emzoo.train.augment`, :mod:`~emzoo.train.data`: splits,
  augmentation and datasets
- :mod:`~emzoo.train.run`: the run folder: checks before training, its layout, and packaging it
  afterwards (:func:`~emzoo.train.run.package_run`)
- :mod:`~emzoo.train.trainer`: the training loop (:func:`~emzoo.train.trainer.train`)
- :mod:`~emzoo.train.runfiles`, :mod:`~emzoo.train.plots`: what a run writes (checkpoints, logs,
  plots)
- :mod:`~emzoo.train.grid`: grid search over parameters
"""
