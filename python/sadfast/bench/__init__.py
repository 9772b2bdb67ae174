"""``sadfast bench``: sadfast against the libraries people would otherwise use, in one run."""
