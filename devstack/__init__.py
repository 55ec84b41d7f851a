"""The local stack: what runs this app on a developer's machine and in tests.

Not deployed (``.funcignore`` excludes it): Azurite, the commerce emulator, the local
Functions host and the run command live here.
"""
