"""``python -m medtrans_training`` = the ``medtrans-train`` console script."""

from .cli import main

if __name__ == "__main__":
    main()
