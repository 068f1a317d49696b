"""`make bench`: placecheck measured against baselines from the same run (see __main__.py)."""
