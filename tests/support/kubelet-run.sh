#!/bin/sh
# The fake kubelet's container setup (tests/support/fake_kube/process.rs).
# Run as `unshare --mount --propagation private -- /bin/sh kubelet-run.sh
#   outside KUBELET_DIR SCRATCH WORKDIR DROP N [SOURCE TARGET ro|rw]... -- ARGV...`
# with exactly the container's environment. SOURCEs are relative to
# KUBELET_DIR; TARGETs are absolute paths in the container. The argv is only
# ever passed on as arguments ("$@"), never put into shell text. DROP says
# which of PWD and OLDPWD the pod does not set (`PWD,OLDPWD`, `PWD`,
# `OLDPWD` or `-`).
#
# Outside (in the new mount namespace, still on the host's root): the
# container's root is an overlay of the host's root with its upper layer on
# a tmpfs (writes go nowhere else), the host's other mounts (/proc, /dev,
# /sys...) bound into it, and KUBELET_DIR bound at /.kubelet. Then, chrooted
# ("inside"), each SOURCE is bound at its TARGET (made if missing: in the
# overlay, or in a volume), read-only ones remounted so, /.kubelet
# unmounted, and the argv exec'ed in WORKDIR (made if missing).
set -eu
stage=$1
shift
if [ "$stage" = outside ]; then
    kubelet=$1 scratch=$2
    shift 2
    root=$scratch/root
    layer=$scratch/layer
    /bin/mkdir -p "$root" "$layer"
    /bin/mount -t tmpfs tmpfs "$layer"
    /bin/mkdir "$layer/upper" "$layer/work"
    /bin/mount -t overlay overlay -o "lowerdir=/,upperdir=$layer/upper,workdir=$layer/work" "$root"
    bound=""
    while read -r _ _ _ _ point _; do
        case "$point" in
        / | *\\*) continue ;;
        esac
        skip=no
        for b in $bound; do
            case "$point" in
            "$b" | "$b"/*) skip=yes ;;
            esac
        done
        case "$point" in
        "$kubelet" | "$kubelet"/*) skip=yes ;;
        esac
        [ "$skip" = yes ] && continue
        if [ -d "$point" ]; then
            /bin/mkdir -p "$root$point"
        elif [ -f "$point" ]; then
            /bin/mkdir -p "$root${point%/*}/"
            [ -e "$root$point" ] || : >"$root$point"
        else
            continue
        fi
        /bin/mount --rbind "$point" "$root$point"
        bound="$bound $point"
    done </proc/self/mountinfo
    /bin/mkdir -p "$root/.kubelet"
    /bin/mount --bind "$kubelet" "$root/.kubelet"
    exec /usr/sbin/chroot "$root" /bin/sh "$0" inside "$@"
fi

# inside
workdir=$1 drop=$2 n=$3
shift 3
i=0
while [ "$i" -lt "$n" ]; do
    source=/.kubelet/$1 target=$2 mode=$3
    shift 3
    if [ -d "$source" ]; then
        /bin/mkdir -p "$target"
    else
        /bin/mkdir -p "${target%/*}/"
        [ -e "$target" ] || : >"$target"
    fi
    /bin/mount --bind "$source" "$target"
    if [ "$mode" = ro ]; then
        /bin/mount -o remount,bind,ro "$target"
    fi
    i=$((i + 1))
done
[ "$1" = -- ] && shift
/bin/umount -l /.kubelet
/bin/rmdir /.kubelet
/bin/mkdir -p "$workdir"
cd "$workdir"
# The shells here set PWD (and cd OLDPWD); the container gets neither
# unless its pod sets them.
case "$drop" in
PWD,OLDPWD) exec /usr/bin/env -u PWD -u OLDPWD -- "$@" ;;
PWD) exec /usr/bin/env -u PWD -- "$@" ;;
OLDPWD) exec /usr/bin/env -u OLDPWD -- "$@" ;;
*) exec "$@" ;;
esac
