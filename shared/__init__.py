"""Domain code of the usage reporter; the function folders are thin adapters over it."""
