"""The one command-line program that every Job and CronJob runs: ``python -m jobs <subcommand>``."""
