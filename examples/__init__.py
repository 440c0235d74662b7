"""Reference scenarios built on the platform, outside it: what a user of the platform writes.

- ``examples.fraud``: card-transaction risk scoring. A feature repository (``repo``), its data (``scenario``:
  seed transactions and the ``user_stats`` pipeline), a request-time transform (``transforms``) and a
  training set (``training``), loaded by the platform by reference (``module:attribute``).
- ``examples.multimodal``: product listings (``dataset``: a generated photo and a title, six classes) and the
  training run on them (``training``); the trained model carries the class names to Triton and the
  preprocessing service.

The images ship this package, so that the chart's values (FEATURES_REPO, for every program), the jobs'
defaults (``FEATURES_REPO``, ``--dataset fraud``, ``train-multimodal``) work out of the box; app/ never imports
it nor names it (tests/test_layers.py).
"""
