#!/bin/sh
# A legacy export job that knows nothing of Dagster: it writes a CSV and prints what it did.
# The client's output rules turn its lines into metadata and log levels; the CSV is copied out.
set -eu
mkdir -p /out
printf 'region,total\nnorth,120\nsouth,95\neast,143\n' > /out/export.csv
echo "export: wrote /out/export.csv"
echo "rows written: 3"
echo "WARNING region west had no data" >&2
echo "export: done"
