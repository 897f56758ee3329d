"""ICD: Learning Integral Objects with Intra-Class Discriminator (Fan et al., CVPR 2020).

The method: superpixels, the ICD model and losses, its training, score maps, seeds and seed quality, and its
CLI verbs. Everything it shares with the segmentation stage lives in `wsss`.
"""

__version__ = "0.1.0"
