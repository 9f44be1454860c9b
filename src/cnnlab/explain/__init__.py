"""Explain a model or a run: summary table, FLOPs, receptive field, the course's formulas, plots, the
explainer page, Keras weight import. Nothing here trains."""
from .explainer import ExplainerPage, Story, build_page
from .formulas import Worked, compare_kernels, conv_example, conv_output, dense_params, receptive_field
from .keras_import import load_keras_weights
from .plots import (
    Plot, confusion_figure, feature_maps_figure, filters_figure, history_figure, plot_confusion_matrix,
    plot_feature_maps, plot_filters, plot_history, plot_runs, runs_figure, samples_figure,
)
from .summary import Summary, summarize, summary_to_dict

__all__ = [
    "ExplainerPage", "Story", "build_page",
    "Plot", "Summary", "Worked", "compare_kernels", "confusion_figure", "conv_example", "conv_output",
    "dense_params", "feature_maps_figure", "filters_figure", "history_figure", "load_keras_weights",
    "plot_confusion_matrix", "plot_feature_maps", "plot_filters", "plot_history",
    "plot_runs", "receptive_field", "runs_figure", "samples_figure", "summarize", "summary_to_dict",
]
