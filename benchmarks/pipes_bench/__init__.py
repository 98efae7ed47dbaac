"""pipes-docker's benchmark, as a package (``python benchmarks/bench.py`` runs it).

* ``scenarios`` - the container jobs, their parameters, and what a correct outcome is;
* ``runners``   - one class per way of running a job: pipes-docker (mounted, streamed, and the
  two variants that measure stats sampling and reattach), dagster-docker's client, docker-py,
  ``docker run``, and the in-process floor;
* ``measure``   - one worker process per measurement, warm-ups, clean-up of leftovers;
* ``report``    - the markdown table, results.json, and the PNG plot;
* ``__main__``  - the command line.
"""
