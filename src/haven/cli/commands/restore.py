"""More `haven restore …` commands (restore-vm, files mount-rp/unmount-rp …) and `haven vault import`.

Commands are added to the existing Typer groups: ``restore`` from ``commands.protection`` and ``vault``
from ``commands.vaults``; ``main.py`` imports this module so they register.
"""
