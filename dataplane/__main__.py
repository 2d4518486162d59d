"""``python -m dataplane --cp HOST:PORT [--listen HOST:PORT] [--node-id ID]``."""

from __future__ import annotations

import sys

from dataplane.cli import main

sys.exit(main())
