"""What every benchmark shares: origins, corpora, PostgreSQL, measuring, programs, the report.

- `postgres`: the throwaway embedded PostgreSQL and its databases.
- `origins`: nginx serving a corpus on loopback, optionally with a CDN-like latency.
- `corpus`: the files measured (photos, PNG bombs, one big MP4, random files in a mediad store).
- `scratch`: the disk and page cache between runs (room, outputs set aside, memory primed).
- `measure`: wall time, a child's (or its whole process tree's) peak RSS and CPU, where the
  machine's CPU went.
- `programs`: where the tools compared are found or installed, and the environment they get.
- `runs`: one tool's pass over a set of files, as every table reads it.
- `report`: tables, figures, quiet logs.
- `targets`: the targets a script prints, and its exit status from them.
"""
