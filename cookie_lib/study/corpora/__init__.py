"""The study's data: the corpora it builds, the pre-training corpus and the leakage checks between them.

Every builder is offline after a one-off package fetch (npm, apt), writes atomically and validates
what it wrote. ``python -m cookie_lib.study.corpora build`` builds all of them (data/README.md
describes each). Modules:

- :mod:`.build` - ``build_all``: every corpus under data/ in dependency order, skipping built ones;
  :mod:`.__main__` is its command line (``build``, ``leakage``).
- :mod:`.emoji` - the emoji corpus (Noto, Twemoji, OpenMoji, Fluent designs with CLDR captions);
  :mod:`.families` - its families and sibling groups, the blocks of concepts that share a split.
- :mod:`.openclipart` - the Open Clip Art 0.18 corpus from the Debian package; :mod:`.debian` - the
  ``.deb`` reader; :mod:`.drawings` - SVG rendering, perceptual hashes and de-duplication.
- :mod:`.wordnet` - the WordNet 3.1 lemma -> gloss text-matching task.
- :mod:`.pretrain` - the pre-training corpus (Open Clip Art + emoji train/val images).
- :mod:`.splits` - the seeded, stratified, family-grouped train/val/test split of both image corpora.
- :mod:`.leakage` - the checks between pre-training and the downstream test sets (the table they write
  into data/README.md, and notebook 01's tables and text of the corpora, are in :mod:`cookie_lib.study.views`:
  ``datareadme``, ``corpora``).
- :mod:`.common` - data/ paths, tokens and text normalisation, the corpus key prefixes.
"""
