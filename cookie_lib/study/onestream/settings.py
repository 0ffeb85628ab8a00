"""The cross-encoder's training settings: constants, and ``SETTINGS``, saved with every run (result.json,
onestream.pt) so that a finished run is reused only while they are unchanged."""

JOINT_DEPTH = 1           # joint blocks over [CLS; image; caption]: 2 cost 2x per training step (3 min per seed on 1 thread)
HARD_NEGATIVE_POOL = 64   # candidates per image / caption mined from COOKIE's similarity over the training split
HARD_NEGATIVE_SKIP = 4    # the most similar other-key items left out (often false negatives: validation R@1 7.7 vs 7.1 with 0)
GROUP_NEGATIVES = 3       # hard negatives drawn from the pool into each positive's group
BATCH = 64                # positives per step: B (1 + 2 H) = 448 joint passes
STEPS = 150               # optimiser steps (about 1.2 epochs of the default profile's 8,148 images)
VAL_EVERY = 50            # steps between validations (the checkpoint kept is the best of them)
VAL_IMAGES = 300          # validation images the checkpoint is chosen on (all their captions)
VAL_K = 10                # ... by re-ranking COOKIE's top 10 both ways
SETTINGS = dict(joint_depth=JOINT_DEPTH, hard_negative_pool=HARD_NEGATIVE_POOL, hard_negative_skip=HARD_NEGATIVE_SKIP,
                group_negatives=GROUP_NEGATIVES,
                batch=BATCH, steps=STEPS, val_every=VAL_EVERY, val_images=VAL_IMAGES, val_k=VAL_K,
                loss="grouped softmax (LCE)")
