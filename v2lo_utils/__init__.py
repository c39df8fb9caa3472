"""Video2Layout workbook library.

The pure core (``cogmap``, ``geometry``, ``questions``, ``scoring``, ``rewards``) imports only the
standard library; heavier layers import torch and friends lazily, inside the functions that need them.
"""

__version__ = "0.1.0"
