"""MedTransWeb: the MedTrans browser front end (trame-slicer views on the Slicer module's logic).

Start it with ``python -m MedTransWeb`` or ``medtrans web``; see :func:`MedTransWeb.app.main`.
"""
