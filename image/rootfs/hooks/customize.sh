#!/bin/sh
# mmdebstrap customize hook: settings the initramfs and the Pi boot files depend on, then
# the one mkinitramfs run (which also writes /boot/firmware/{initrd,config.txt,cmdline.txt}).
set -eu
root=$1
rm -f "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs

# The Pi's kernel command line (cmdline.txt) names the root filesystem by label: the
# image's first root slot. Serial console on the GPIO UART, video console on HDMI.
cat > "$root/etc/default/raspi-firmware" <<'CFG'
ROOTPART=LABEL=root-a
CONSOLES="ttyS1,115200 tty0"
CMA=64M
KERNEL_ARCH=arm64
CFG
# The initramfs's fsck hook copies fsck.ext4 only when /etc/fstab names the root's type;
# without it the root filesystem is mounted unchecked after a power cut. (assemble.sh
# installs the full fstab from overlay/etc/fstab.)
echo 'LABEL=root-a / ext4 defaults,noatime,errors=remount-ro 0 1' > "$root/etc/fstab"
# zstd: small and quick to unpack on the Pi.
sed -i 's/^COMPRESS=.*/COMPRESS=zstd/' "$root/etc/initramfs-tools/initramfs.conf"

echo "customize: mkinitramfs under qemu-user, started $(date -u +%T)"
chroot "$root" update-initramfs -c -k all
echo "customize: mkinitramfs done $(date -u +%T)"

# Tidy what the package installation leaves behind.
rm -rf "$root/var/cache/apt/"*.bin "$root/var/lib/apt/lists/"* "$root/var/log/"*.log \
  "$root/var/cache/debconf/"*-old "$root/var/lib/dpkg/"*-old
