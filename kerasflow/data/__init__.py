"""Data: reading sources, cleaning, schemas and profiles, and the files steps pass each other."""
