"""Experiments that train or fit many times to choose: `compare` (backbones on one split),
`cross_validation`, `probe` (backbones ranked on frozen features; `train --backbone auto`) and `audit`
(labels checked out of fold), all run by one experiment skeleton (`experiments`). Imports the packages
below it, up to `reports`.
"""
