#!/bin/sh
# mmdebstrap setup hook: raspi-firmware installs the Pi boot files into /boot/firmware.
set -eu
mkdir -p "$1/boot/firmware"
