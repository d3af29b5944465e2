"""Shared static analyses that several rules read: loops, dataflow, train/eval flow and per-file facts."""
