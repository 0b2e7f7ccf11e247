# QEMU with its NIC on vhost-bridge (the bridge listens: vhost-bridge --socket-path PATH, or a port of
# vhost-bridge serve). Guest memory must be shared with the bridge (share=on); reconnect-ms=1000 makes
# QEMU connect again within a second when the bridge restarts (QEMU 9.2 and later; before 9.2 write
# reconnect=1, which QEMU 10.1 and later refuse). QEMU listening instead:
# -chardev socket,id=vu0,path=PATH,server=on,wait=off and vhost-bridge --connect PATH.
qemu-system-x86_64 -accel kvm -machine q35 -m 512M \
  -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
  -chardev socket,id=vu0,path=/run/vhost-bridge/vm1.sock,reconnect-ms=1000 \
  -netdev vhost-user,id=n0,chardev=vu0 \
  -device virtio-net-pci,netdev=n0
