"""`python -m src.cli COMMAND`: what `.venv/bin/bifrost COMMAND` runs."""

import sys

from src.cli.main import main

sys.exit(main())
