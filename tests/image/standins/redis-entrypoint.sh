#!/bin/sh
# TEST-ONLY stand-in for the official redis image's entry point (see Dockerfile).
set -e
if [ "${1#-}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = "redis-server" ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
