"""The bottom layer: settings, the error tree, hours, the meter catalogue, usage records and
the retry policy. Imports nothing of the project above it."""
