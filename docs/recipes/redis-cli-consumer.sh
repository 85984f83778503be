#!/usr/bin/env bash
# A consumer in a required consumer group with nothing but redis-cli: read an entry, handle it,
# XACK it. Any client of any language that does the same (go-redis, ioredis, Jedis, ...) works;
# the connector notices the XACKs by checking the group's state (no notification needed).
#
#   REDIS_URL=redis://localhost:6379/0 GROUP=risk \
#   STREAMS='md:{AAPL}:candle:1m md:{MSFT}:candle:1m md:order' ./redis-cli-consumer.sh
#
# Declare the group with what it reads: CONNECTOR_CONSUMER_GROUPS="risk[types=candle,order]".
# One entry per call and one process per command: slow, but plain. The project's tests run it.
set -u
url=${REDIS_URL:-redis://localhost:6379/0}
group=${GROUP:?set GROUP}
consumer=${CONSUMER:-$(hostname)-$$}
read -r -a streams <<<"${STREAMS:?set STREAMS}"

cli() { redis-cli -u "$url" "$@"; }

for stream in "${streams[@]}"; do
    # "$": from now on. The connector creates the group the same way before its first entry;
    # whoever comes second gets BUSYGROUP, which is fine.
    cli XGROUP CREATE "$stream" "$group" '$' MKSTREAM >/dev/null 2>&1 || true
done

while true; do
    for stream in "${streams[@]}"; do
        # --raw: one value per line: the stream, the entry id, then field, value, ...
        mapfile -t reply < <(cli --raw XREADGROUP GROUP "$group" "$consumer" COUNT 1 BLOCK 5 \
            STREAMS "$stream" '>')
        [ "${#reply[@]}" -ge 2 ] || continue
        entry_id=${reply[1]}
        # ... handle the entry here (its fields are "${reply[@]:2}") ...
        cli XACK "$stream" "$group" "$entry_id" >/dev/null
    done
done
