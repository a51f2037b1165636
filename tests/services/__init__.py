"""Real services the tests start: PostgreSQL, Azurite, S3, proxies, QEMU guests, libvirt."""
