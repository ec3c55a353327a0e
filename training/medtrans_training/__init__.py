"""medtrans_training: datasets, trainers per stage, evaluation and export of MedTrans model bundles.

Imports MedTransCore (the same normalisation, body mask and inference path as deployment); MedTransCore
never imports this package.
"""

__version__ = "0.1.0"
