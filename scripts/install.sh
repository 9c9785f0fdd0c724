#!/usr/bin/env bash
# vnflab installer: apt packages + a Python venv with vnflab in it. Idempotent: run it again
# at any time. Used by the README, by CI (.ci/run) and by the VM recipe, so there is one way
# to get a working machine. Debian 12 is what CI runs; Ubuntu 22.04/24.04 use the same names.
#
# Python: a venv built from the *system* python3 (/usr/bin/python3), because Mininet's Python
# package comes from apt (package "mininet") together with its C helper mnexec. PyPI's only
# mininet release is a 2020 pre-release (2.3.0.dev6); mixing it with apt's mnexec 2.3.x invites
# version skew. So we link apt's mininet package (and nothing else from the system) into the
# venv, and every other Python dependency comes from PyPI, pinned by pyproject.toml.
set -euo pipefail
# Options for a lab VM (vm/ uses them; CI and run.sh call this script without options):
#   --hugepages N   reserve N 2 MiB huge pages now and at every boot (sysctl.d) and mount hugetlbfs
#   --jupyter       JupyterLab in the venv and a systemd unit serving notebooks/ on 127.0.0.1:8888
HUGEPAGES=""
JUPYTER=0
while [ $# -gt 0 ]; do
    case "$1" in
        --hugepages) HUGEPAGES=${2:?--hugepages needs a number}; shift 2 ;;
        --jupyter) JUPYTER=1; shift ;;
        *) echo "usage: $0 [--hugepages N] [--jupyter]" >&2; exit 2 ;;
    esac
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VNFLAB_VENV:-$HERE/.venv}
export DEBIAN_FRONTEND=noninteractive
# In a chroot (vm/build.sh runs this script inside the image it builds) /proc is the build
# host's: change only files there, never the host's live huge pages, mounts or services.
IN_CHROOT=0
if command -v ischroot >/dev/null && ischroot; then IN_CHROOT=1; fi

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (Mininet, namespaces and huge pages need it): sudo $0" >&2
    exit 1
fi

APT_PACKAGES=(
    python3 python3-venv python3-dev build-essential pkg-config git
    mininet openvswitch-switch openvswitch-testcontroller openvswitch-switch-dpdk
    dpdk dpdk-dev libdpdk-dev
    iproute2 bridge-utils iputils-ping ethtool tcpdump netsniff-ng iperf3 curl procps psmisc util-linux
    wrk
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: apt-get install ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The system OVS service is not needed (vnflab runs private OVS instances inside its own
# namespaces); the Debian package may have started it, which is harmless.

# The unprivileged users the autograder runs submissions and the reference as (USERS in
# grader/sandbox_user.py). Made here, once, rather than by the first grading that needs them.
for u in vnflab-student vnflab-ref; do
    if ! id -u "$u" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
    fi
done

SYSPY=/usr/bin/python3
if [ ! -x "$VENV/bin/python" ]; then
    "$SYSPY" -m venv "$VENV"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
APT_MININET=$("$SYSPY" -c 'import mininet, os; print(os.path.dirname(mininet.__file__))')
ln -sfn "$APT_MININET" "$SITE/mininet"

# --- pip: skipped when nothing it depends on changed -------------------------------------------
# A stamp in the venv (so a fresh clone, with a fresh venv, always installs): a hash of the venv's
# python, this checkout's path, pyproject.toml, setup.py and the C sources the extensions build
# from. Same hash and vnflab still imports: the editable install is in place, pip would only
# rebuild it (tens of seconds of setuptools output for nothing).
STAMP="$VENV/.vnflab-install-stamp"
install_hash() {
    {
        "$VENV/bin/python" -VV
        echo "$HERE"
        (cd "$HERE" && { echo pyproject.toml; echo setup.py; find vnf -name '*.[ch]'; } \
            | LC_ALL=C sort | xargs sha256sum)
    } | sha256sum | cut -d' ' -f1
}
want=$(install_hash)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ] \
   || ! (cd / && "$VENV/bin/python" -c 'import vnf, vnflab, pytest' 2>/dev/null); then
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
    "$VENV/bin/python" -m pip install -q -e "$HERE[test]"
    echo "$want" > "$STAMP"
fi
# ---------------------------------------------------------------------------------------------
ln -sfn "$VENV/bin/vnflab" /usr/local/bin/vnflab

if [ -n "$HUGEPAGES" ]; then
    echo "vm.nr_hugepages = $HUGEPAGES" > /etc/sysctl.d/80-vnflab-hugepages.conf
    grep -qs ' /dev/hugepages ' /etc/fstab || echo 'nodev /dev/hugepages hugetlbfs pagesize=2M 0 0' >> /etc/fstab
    if [ "$IN_CHROOT" = 0 ]; then
        sysctl -q -w vm.nr_hugepages="$HUGEPAGES" || echo "install.sh: could not reserve huge pages now (set for the next boot)" >&2
        mkdir -p /dev/hugepages
        grep -qs ' /dev/hugepages hugetlbfs' /proc/mounts || mount /dev/hugepages
    fi
fi

if [ "$JUPYTER" = 1 ]; then
    "$VENV/bin/python" -m pip install -q jupyterlab
    if [ -d /run/systemd/system ] || { [ "$IN_CHROOT" = 1 ] && [ -d /etc/systemd/system ]; }; then
        # As root: the notebooks measure in network namespaces. Localhost only: use ssh -L 8888:...
        cat > /etc/systemd/system/vnflab-jupyter.service <<UNIT
[Unit]
Description=JupyterLab for the vnflab notebooks (127.0.0.1:8888)
After=network.target

[Service]
WorkingDirectory=$HERE/notebooks
ExecStart=$VENV/bin/jupyter lab --ip=127.0.0.1 --port=8888 --no-browser --allow-root --ServerApp.root_dir=$HERE/notebooks
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
        if [ "$IN_CHROOT" = 1 ]; then
            systemctl enable vnflab-jupyter.service     # offline: starts at the image's first boot
        else
            systemctl daemon-reload
            systemctl enable --now vnflab-jupyter.service
        fi
        echo "install.sh: JupyterLab on 127.0.0.1:8888 (URL with token: sudo $VENV/bin/jupyter server list)"
    fi
fi

(cd / && "$VENV/bin/python" -c 'import mininet.net, vnf, vnflab') >/dev/null
echo "install.sh: ok. venv: $VENV ; 'vnflab' is on PATH (/usr/local/bin/vnflab)"
