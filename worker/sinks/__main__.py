import sys

from worker.sinks.cli import main

sys.exit(main())
