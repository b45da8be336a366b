"""Run a jobcast worker: `python worker.py [--burst] [--simple] [--queues NAME]` (same as `jobcast worker`)."""

import sys

from jobcast.cli import main

if __name__ == "__main__":
    sys.exit(main(["worker", *sys.argv[1:]]))
