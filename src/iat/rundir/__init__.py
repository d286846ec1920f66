"""Run directories, the folders `iat train` writes and every other command reads."""
