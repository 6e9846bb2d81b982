"""Training framework (needs torch: ``pip install emzoo[train]``).

One job per module; only ``emzoo train`` (and the packager) import them, so ``import emzoo`` stays
free of torch:

- :mod:`~emzoo.train.usecase`: the contract between a use case, the trainer and the packager
- :mod:`~emzoo.train.discovery`: finds the use cases in ``training/`` (or ``EMZOO_TRAINING_DIR``)
- :mod:`~emzoo.train.params`: the documented ``params.yaml`` of a use case and ``--set`` overrides
- :mod:`~emzoo.train.split`, :mod:`~emzoo.train.augment`, :mod:`~emzoo.train.data`: splits,
  augmentation and datasets
- :mod:`~emzoo.train.run`: checks before training and the run folder layout
- :mod:`~emzoo.train.trainer`: the training loop (:func:`~emzoo.train.trainer.train`)
- :mod:`~emzoo.train.checkpoint`, :mod:`~emzoo.train.runlog`, :mod:`~emzoo.train.plots`: what a run
  writes
- :mod:`~emzoo.train.grid`: grid search over parameters
"""
