# The `kith` command in an admin's shell reads the same configuration layers as the
# service (docs/configuration.md): `kith settings get domain`, `kith user list`.
export KITH_DEFAULTS=/usr/share/kith/defaults.toml
export KITH_CONFIG=/etc/kith/kith.toml
