"""The study's presentation layer: every figure, table layout and generated sentence of the notebooks,
the report and the README blocks. Views only format and draw what the computing modules
(:mod:`~cookie_lib.study.grid`, :mod:`~cookie_lib.study.verdicts`, :mod:`~cookie_lib.study.analyses`,
:mod:`~cookie_lib.study.bench`, ...) return; nothing here trains, evaluates or tests.
"""
