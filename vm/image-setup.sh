#!/usr/bin/env bash
# Runs INSIDE the image that vm/build.sh is building (chroot through mmdebstrap), never on a
# live machine: installs vnflab with the project's installer and makes the image a student VM.
# Inputs in /tmp/vnflab-build (config, password, optional authorized_keys, host-ca.crt).
set -euo pipefail
B=/tmp/vnflab-build
# shellcheck source=/dev/null
. "$B/config"
export DEBIAN_FRONTEND=noninteractive
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8
for v in http_proxy https_proxy no_proxy PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_DEFAULT_TIMEOUT; do
    [ -n "${!v:-}" ] && export "${v?}"
done
# HTTPS as the build host sees it (for pip), during this script only
if [ -s "$B/host-ca.crt" ]; then
    export PIP_CERT="$B/host-ca.crt" SSL_CERT_FILE="$B/host-ca.crt" REQUESTS_CA_BUNDLE="$B/host-ca.crt"
fi
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# ---- vnflab, the one way: scripts/install.sh (venv in /opt/vnflab/.venv, vnflab on PATH) ----
cd /opt/vnflab
VNFLAB_VENV=/opt/vnflab/.venv bash scripts/install.sh --hugepages 256 --jupyter
vnflab --help >/dev/null
cat > /etc/vnflab-image <<EOF
# the vnflab VM image (vm/build.sh)
commit=$COMMIT
built=$BUILD_DATE
arch=$ARCH
EOF

# ---- the student -------------------------------------------------------------------------------
id student >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --comment "vnflab student" student
usermod -aG sudo student
echo "student:$(cat "$B/password")" | chpasswd
# A single-user lab VM: every lab command is "sudo vnflab ...", so sudo asks no password.
echo 'student ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/vnflab-student
chmod 440 /etc/sudoers.d/vnflab-student
if [ -s "$B/authorized_keys" ]; then
    install -d -m 700 -o student -g student /home/student/.ssh
    install -m 600 -o student -g student "$B/authorized_keys" /home/student/.ssh/authorized_keys
fi
if [ "$SSH_KEY_ONLY" = 1 ]; then
    # with --ssh-key, SSH takes the key only; the password still logs in on the console
    printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\n' > /etc/ssh/sshd_config.d/vnflab.conf
fi

# the released labs (handouts, starters, public tests) in the student's home
rm -rf /home/student/labs
vnflab release /home/student/labs
chown -R student:student /home/student/labs

# ---- login message -----------------------------------------------------------------------------
cat > /etc/motd <<'EOF'

  vnflab student VM: one load balancer built three ways (sockets, AF_PACKET, DPDK).

  Start here:
    sudo vnflab doctor          can this VM run every lab? (says what to fix if not)
    sudo vnflab demo --quick    the reference load balancers, on a Mininet topology
    cd ~/labs/lab1              your first lab: read README.md there
    vnflab lab list             the labs; "sudo vnflab lab check 1" checks your lab 1

  Jupyter (the notebooks): from your computer, ssh -L 8888:127.0.0.1:8888 -p PORT student@HOST
  then: sudo /opt/vnflab/.venv/bin/jupyter server list   (the URL with its token)
  vnflab itself is in /opt/vnflab (see /etc/vnflab-image for its version).

EOF
rm -f /etc/update-motd.d/10-uname

# ---- system: network, SSH host keys, console, file systems -------------------------------------
echo vnflab > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvnflab\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
# DHCP on the VM's NIC, whatever the hypervisor names it (enp0s3, ens3, enp0s1, eth0, ...);
# Mininet's and OVS's interfaces (s1-eth1, h1-eth0, ovs-system) do not match and stay unmanaged
cat > /etc/systemd/network/20-vnflab-nic.network <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
systemctl enable systemd-networkd.service systemd-resolved.service ssh.service
# every image gets its own SSH host keys, made at its first boot
rm -f /etc/ssh/ssh_host_*
cat > /etc/systemd/system/vnflab-ssh-hostkeys.service <<'EOF'
[Unit]
Description=Make the SSH host keys at the first boot of the vnflab image
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
systemctl enable vnflab-ssh-hostkeys.service
# the serial console (console= on the kernel command line starts its getty); optional autologin
if [ "$AUTOLOGIN" = 1 ]; then
    mkdir -p "/etc/systemd/system/serial-getty@$CONSOLE.service.d"
    cat > "/etc/systemd/system/serial-getty@$CONSOLE.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin student --keep-baud 115200,57600,38400,9600 - $TERM
EOF
fi
# install.sh added the hugetlbfs line; the root file system goes first
{ echo "UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1"; grep -v '^UUID=.* / ' /etc/fstab 2>/dev/null || true; } > /etc/fstab.new
mv /etc/fstab.new /etc/fstab

# ---- smaller image -----------------------------------------------------------------------------
apt-get clean
rm -rf /root/.cache /opt/vnflab/build /var/tmp/* /tmp/pip-*
echo "image-setup.sh: ok"
