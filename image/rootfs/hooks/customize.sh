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
# zstd: small and quick to unpack on the Pi. MODULES=list plus the hook below instead of
# Debian's MODULES=most: "most" also takes every NIC, SCSI/ATA HBA, HID and filesystem
# driver (766 modules; ~10 min of mkinitramfs under qemu-user), none of which the box
# needs to mount its root from SD, USB or virtio.
sed -i 's/^COMPRESS=.*/COMPRESS=zstd/; s/^MODULES=.*/MODULES=list/' \
  "$root/etc/initramfs-tools/initramfs.conf"
cat > "$root/etc/initramfs-tools/hooks/kith-modules" <<'HOOK'
#!/bin/sh
# Kith appliance: the modules needed to find and check the root filesystem.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
# From Debian's "base": SoC buses, clocks, GPIO, I2C, PCIe controllers, PHYs, pin control,
# regulators, resets, SPI, USB hosts and PHYs, RTC (e.g. the Pi 4's SD card needs its
# GPIO-driven regulator, its USB the PCIe controller and the firmware reset driver).
for d in bus clk gpio i2c/busses i2c/muxes mfd pci/controller phy pinctrl regulator \
         reset spi usb/phy usb/dwc2 usb/typec/tcpm rtc; do
  copy_modules_dir "kernel/drivers/$d"
done
copy_modules_dir kernel/drivers/usb/host hwa-hc.ko sl811_cs.ko sl811-hcd.ko u132-hcd.ko whci-hcd.ko
# SD/eMMC, block devices (virtio, NVMe), USB mass storage.
auto_add_modules mmc block usb_storage
manual_add_modules ext4 vfat nls_cp437 nls_ascii sd_mod uas virtio_pci virtio_mmio \
  virtio_blk onboard_usb_hub onboard_usb_dev extcon-usb-gpio usbhid hid-generic
HOOK
chmod 755 "$root/etc/initramfs-tools/hooks/kith-modules"

echo "customize: mkinitramfs under qemu-user, started $(date -u +%T)"
chroot "$root" update-initramfs -c -k all
echo "customize: mkinitramfs done $(date -u +%T)"

# Tidy what the package installation leaves behind.
rm -rf "$root/var/cache/apt/"*.bin "$root/var/lib/apt/lists/"* "$root/var/log/"*.log \
  "$root/var/cache/debconf/"*-old "$root/var/lib/dpkg/"*-old
