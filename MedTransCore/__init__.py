"""MedTransCore: the pure-Python pipeline behind every MedTrans front end (never imports slicer, qt, vtk, trame)."""

__version__ = "0.1.0"
