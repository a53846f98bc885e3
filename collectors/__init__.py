"""Collectors: one module per evidence family. A collector yields evidence; it never signs or stores."""
