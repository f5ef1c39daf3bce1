"""The composition roots: the `dpflow` CLI and the demo data centre. They wire flows,
tasks and drivers together; nothing below imports them."""

import os

# Typer's rich help costs ~0.3 s of imports on every `dpflow ... --help`; plain help is
# enough there (tables and progress bars still use rich). Set TYPER_USE_RICH=1 for it.
os.environ.setdefault("TYPER_USE_RICH", "0")
