#!/bin/sh
# mmdebstrap essential hook: under qemu-user one mkinitramfs run takes minutes, and the
# kernel and initramfs-tools would each trigger one. Divert update-initramfs to a no-op
# while packages install; customize.sh restores it and runs it once.
set -eu
chroot "$1" dpkg-divert --quiet --local --rename \
  --divert /usr/sbin/update-initramfs.kith-diverted --add /usr/sbin/update-initramfs
ln -sf /bin/true "$1/usr/sbin/update-initramfs"
