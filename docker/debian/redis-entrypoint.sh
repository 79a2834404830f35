#!/bin/sh
# Run redis-server as the redis user, listening for other containers: without a config file Redis 7
# binds every interface but refuses remote clients in protected mode (the official image turns it off).
set -eu
chown redis:redis /data
if [ "$1" = redis-server ]; then
    shift
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no "$@"
fi
exec "$@"
