"""Necks (registry ``NECKS``): FPN and CSPNeXt-PAFPN.

Every module of this package is imported here (importing the package registers its
classes); a new module must be added below.
"""
from .cspnext_pafpn import CSPNeXtPAFPN
from .fpn import FPN

__all__ = ['CSPNeXtPAFPN', 'FPN']
