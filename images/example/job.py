"""An example Pipes job: counts the words of a made-up text and reports what it found.

Everything here runs inside the container. dagster_pipes reads the context pipes-docker mounted
and writes messages back to it; print() output reaches Dagster as compute logs.
"""

import hashlib
import sys
from collections import Counter

from dagster_pipes import open_dagster_pipes

TEXT = """the quick brown fox jumps over the lazy dog the dog sleeps and the fox runs"""


def main() -> None:
    with open_dagster_pipes() as pipes:
        top = int(pipes.get_extra("top_n")) if "top_n" in pipes.extras else 3
        pipes.log.info(f"counting words for asset {pipes.asset_key}")
        counts = Counter(TEXT.split())
        print(f"read {sum(counts.values())} words")  # -> stdout
        print("this line goes to stderr", file=sys.stderr)
        most_common = counts.most_common(top)
        pipes.report_custom_message({"most_common": most_common})
        pipes.report_asset_materialization(
            metadata={
                "word_count": sum(counts.values()),
                "distinct_words": len(counts),
                "most_common": {"raw_value": dict(most_common), "type": "json"},
            },
            # A content hash: the same input gives the same version in every run (Python's
            # hash() of a str is salted per process, so it would change on every run).
            data_version=hashlib.sha256(TEXT.encode()).hexdigest()[:16],
        )


if __name__ == "__main__":
    main()
