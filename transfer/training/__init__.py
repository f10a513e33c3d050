"""Turning data into a run: the options and their checks, what is checked before the long work
(`preflight`), the recipe (`train`), what a run carries and building it (`state`), its stages,
measuring and publishing the finished run (`publish`), callbacks, learning-rate
schedules, MixUp/CutMix, the distribution strategy, the frozen-feature cache (`features`) and the
learning-rate sweep. Imports the packages below it (`core` to `models`).
"""
