"""``python -m sergas_guard.cli``: the sergas-guard command."""

from sergas_guard.cli import main

main()
