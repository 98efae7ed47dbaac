#!/bin/sh
# Start sshd on 127.0.0.1:$SSH_PORT when $SSH_DIR/authorized_keys exists, then run dockerd on
# the container's unix socket (for `docker system dial-stdio`, which docker-py's ssh transport
# runs here) and on tcp://127.0.0.1:$DOCKER_PORT. Extra arguments go to dockerd.
set -eu

if [ -f "$SSH_DIR/authorized_keys" ]; then
    # Copies, so sshd's ownership and mode checks hold whoever owns the mounted dir.
    install -d -m 700 /root/.ssh /run/sshd
    install -m 600 "$SSH_DIR/authorized_keys" /root/.ssh/authorized_keys
    for key in "$SSH_DIR"/ssh_host_*_key; do
        if [ -f "$key" ]; then install -m 600 "$key" /etc/ssh/; fi
    done
    ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A -q
    host_keys=""
    for key in /etc/ssh/ssh_host_*_key; do host_keys="$host_keys -h $key"; done
    # shellcheck disable=SC2086  # one -h option per key
    /usr/sbin/sshd -D -e -o "ListenAddress=127.0.0.1:$SSH_PORT" $host_keys &
else
    echo "dind: no $SSH_DIR/authorized_keys, not starting sshd" >&2
fi

exec dockerd \
    --host unix:///var/run/docker.sock \
    --host "tcp://127.0.0.1:$DOCKER_PORT" \
    --bridge=none --iptables=false --ip6tables=false \
    --exec-root /run/dind \
    --storage-driver vfs \
    "$@"
