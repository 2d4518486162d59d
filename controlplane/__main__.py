"""python -m controlplane runs the meterline CLI."""

from controlplane.cli import main

raise SystemExit(main())
