#!/bin/sh
# A shell-only Pipes job (no Python in its image): it reports through the `dagster-pipes`
# command that inject_reporter=True puts on its PATH, and `dagster-pipes run` reports how it ended.
set -eu
threshold=$(dagster-pipes context extra max_bad_rows)
rows=0
bad=0
for value in 12 7 -1 30 4 18; do
    rows=$((rows + 1))
    [ "$value" -ge 0 ] || bad=$((bad + 1))
done
dagster-pipes log info "checked $rows rows, $bad bad (at most $threshold allowed)"
dagster-pipes materialize --meta rows=int:"$rows" --meta bad_rows=int:"$bad" \
    --meta checked_by=text:"$(uname -s) sh, no Python"
if [ "$bad" -le "$threshold" ]; then
    dagster-pipes check bad_rows_within_limit --passed --meta bad_rows=int:"$bad"
else
    dagster-pipes check bad_rows_within_limit --failed --meta bad_rows=int:"$bad"
fi
