"""Checks of what was generated: the reference classifier (`quality`) and the judge that
scores every synthetic image against real validation data (`judge`)."""
