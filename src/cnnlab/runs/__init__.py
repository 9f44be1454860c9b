"""The application layer, where names meet modules: RunConfig and recipes, run directories and run cards,
the budget planner, compare, predict, export, Keras import and pictures of a run.

Above the engine (which knows no model name and no dataset format) and below ``cnnlab.api``.
"""
