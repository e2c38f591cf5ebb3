"""Which registered models the graph test suites export in `make test`.

Exporting is the slow part of those suites (the dynamo tracer: 20-120 s per model on 2 cores),
so `make test` exports one model per paper and `make test-exhaustive` all of them.
"""
from __future__ import annotations

# One per paper: RegSeg, SFNet-Lite, RTSeg, ESeg-Lite.
FAMILIES: tuple[str, ...] = ('regseg48', 'sfnet_lite_r18', 'rtseg_s', 'eseg_lite_s')
