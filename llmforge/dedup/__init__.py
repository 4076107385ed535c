"""Corpus cleaning on datatrove: exact and MinHash dedup, the repeated n-gram filter,
semantic dedup, decontamination and quality filters. `driver.dedup` runs all of it."""
