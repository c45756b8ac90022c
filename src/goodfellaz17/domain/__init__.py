"""The engine's pure logic: no I/O, no imports of the rest of the package."""
