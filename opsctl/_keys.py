"""``opsctl keys new``: an Ed25519 signing key for maintenance commands."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from shared import ConfigError, keyring_entry_toml, new_keypair


def new_key(kid: str, directory: Path, actions: list[str], console: Console) -> int:
    """Write ``DIR/KID.pem`` (private, 0600, never overwritten) and ``DIR/KID.pub.pem``, and print
    the keyring block to paste. Exit code: 0 written, 1 refused (exists), 2 bad input."""
    private_pem, public_pem = new_keypair()
    try:
        block = keyring_entry_toml(kid, public_pem, actions)
    except ConfigError as exc:
        console.print(f"[bold red]{exc}[/]")
        return 2
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{kid}.pem"
    public_path = directory / f"{kid}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            console.print(f"[bold red]{path} exists:[/] refusing to overwrite a key")
            return 1
    try:
        # O_EXCL: never replace a key, even one created between the check above and here.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        console.print(f"[bold red]{private_path} exists:[/] refusing to overwrite a key")
        return 1
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    os.chmod(private_path, 0o600)  # whatever the umask said
    public_path.write_bytes(public_pem)
    console.print(f"private key: {private_path} (mode 0600; keep it secret, never commit it)")
    console.print(f"public key:  {public_path}")
    console.print("\nAdd this to the worker's keyring (OPS_KEYRING), then restart the worker:\n")
    console.print(block, markup=False, highlight=False, soft_wrap=True)
    return 0
