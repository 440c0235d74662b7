"""The Spark operator's mainApplicationFile (local:///opt/spark/jobs_main.py in the jobs-spark image):
spark-submit runs a Python file, not a module, so this file runs `python -m jobs` with the arguments the
SparkApplication passes (historical ..., features ...)."""

import sys

from jobs.__main__ import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
