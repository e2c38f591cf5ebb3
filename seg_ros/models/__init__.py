"""Segmentation networks from the RegSeg, SFNet(-Lite), RTSeg and ESeg papers.

One file per architecture (``regseg``, ``sfnet``, ``rtseg``, ``eseg``), registered with
``@register_model`` and imported by the registry on first use of :func:`create_model` or
:func:`list_models`.
"""
from seg_ros.models.registry import create_model, list_models, register_model

__all__ = ['create_model', 'list_models', 'register_model']
