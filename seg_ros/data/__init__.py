"""seg_ros.data: datasets, the synthetic drive generator, augmentations and sampling.

Submodules are imported on demand (``seg_ros.data.synthetic``, ``.datasets``, ``.toy``,
``.transforms``, ``.sampling``); see ``docs/data.md``.
"""
