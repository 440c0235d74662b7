"""Reference scenarios built on the platform, outside it: what a user of the platform writes.

- ``examples.fraud``: card-transaction risk scoring. A feature repository (``repo``), its data (``scenario``:
  seed transactions and the ``user_stats`` pipeline), a request-time transform (``transforms``) and a
  training set (``training``), loaded by the platform by reference (``module:attribute``).

The images ship this package, so that the chart's defaults (FEATURES_REPO, the jobs' ``--dataset fraud``)
work out of the box; app/ never imports it (tests/test_layers.py).
"""
