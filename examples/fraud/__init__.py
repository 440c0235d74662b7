"""The fraud scenario: ``FEATURES_REPO=examples.fraud.repo:reference_repo``, models trained with
``python -m jobs train --dataset fraud`` record ``examples.fraud.transforms:fraud_v1`` as their transform."""
