"""The replication study built on the core library: corpora, the variants grid, verdicts, reports,
figures and benchmarks. Imports run one way only: ``cookie_lib.study`` -> ``cookie_lib`` (core), never back.
"""
