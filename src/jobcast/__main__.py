import sys

from jobcast.cli import main

sys.exit(main())
