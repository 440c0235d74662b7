"""``make demo`` (``python -m demo``): the platform end to end on this machine. Development only, like the
harness it runs on (devharness): it is never copied into an image."""
