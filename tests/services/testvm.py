"""Haven's test guest for the tests: the builder and QEMU runner live in ``haven.testguest`` (the demo of
``haven serve --demo`` boots it too)."""

from haven.testguest import (  # noqa: F401
    DEFAULT_DIR,
    GuestImages,
    RunningGuest,
    boot,
    ensure_images,
    fs_cat,
    new_disk,
    qemu_available,
)

__all__ = ["GuestImages", "RunningGuest", "ensure_images", "new_disk", "boot", "qemu_available", "fs_cat", "DEFAULT_DIR"]
