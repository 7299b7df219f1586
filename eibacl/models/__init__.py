"""Encoders, projection heads and losses."""
