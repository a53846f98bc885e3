"""Config models and loader; control catalogs and mappings as data files."""
